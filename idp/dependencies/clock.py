"""The app's clock (`app.state.clock`): the services' "now", which tests can move."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from idp.configuration.clock import Clock


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


ClockDep = Annotated[Clock, Depends(get_clock)]
