"""Where protobuf meets dlc's domain: the API's and the events' messages ⇄ domain types, by resource."""
