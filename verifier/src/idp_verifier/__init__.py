"""idp-verifier."""
