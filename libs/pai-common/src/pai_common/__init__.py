"""The shared chassis of every pai service.

Charter: code here is used by two or more components and holds no domain logic. It imports
no service package, and no service imports another service: they share only this package
and the generated protos.
"""
