"""idp: an identity provider for microservice platforms."""
