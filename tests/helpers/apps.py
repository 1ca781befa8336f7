"""The proxy's real aiohttp app in process, behind routers a test sets up with fakes: fast, no network."""

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from serving.app import create_app
from serving.config import ServingConfig

TOKEN = {"Authorization": "Bearer t0ken"}  # the api_token of every app serve_in_process makes


def serve_in_process(tmp_path, setup, body, **settings) -> None:
    """Run ``body(client, *parts)`` against the app made of ``settings`` (over a token, the prediction log and
    version 2 of iris); ``setup(config)``, run in the loop, returns the routers behind the app and ``parts``."""
    defaults = {
        "upstream": "http://127.0.0.1:1",
        "model_uris": ("models:/iris/2",),
        "api_token": "t0ken",
        "prediction_log": str(tmp_path / "predictions.jsonl"),
    }
    config = ServingConfig(**{**defaults, **settings})

    async def main():
        routers, parts = setup(config)
        async with TestClient(TestServer(create_app(config, routers))) as client:
            await body(client, *parts)

    asyncio.run(asyncio.wait_for(main(), timeout=60))
