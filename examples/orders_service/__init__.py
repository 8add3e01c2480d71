"""An example microservice that trusts idp's access tokens and keeps its own permissions."""
