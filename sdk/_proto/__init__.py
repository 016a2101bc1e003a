"""Generated gRPC stubs (see protos/generate.py). Do not edit."""
