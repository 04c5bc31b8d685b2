"""The gRPC servicers, one module per service: map the request, call one use case, map the answer."""
