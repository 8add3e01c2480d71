"""`python -m examples.orders_service`: serve the example on ORDERS_PORT (default 8001)."""

import os

import uvicorn

uvicorn.run(
    "examples.orders_service.app:create_app",
    factory=True,
    host=os.environ.get("ORDERS_HOST", "127.0.0.1"),
    port=int(os.environ.get("ORDERS_PORT", "8001")),
)
