"""The caller's own account."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status

from idp.dependencies.authentication import CallerDep
from idp.dependencies.client import ClientAddressDep
from idp.dependencies.clock import ClockDep
from idp.dependencies.database import DatabaseDep, SessionDep, SettingsDep
from idp.dependencies.permissions import ERROR_RESPONSES, with_error_bodies
from idp.dependencies.ratelimit import limit_password_check
from idp.schemas.users import PasswordChange, Profile
from idp.services import users as users_service

router = APIRouter(
    tags=["me"],
    responses=with_error_bodies(
        {
            401: {"description": "No valid bearer token, or the caller is disabled"},
            **ERROR_RESPONSES,
        }
    ),
)


@router.get("/me", response_model=Profile)
async def me(caller: CallerDep, session: SessionDep) -> Profile:
    """The caller's profile, roles and effective permissions as the database has them now."""
    return await users_service.profile(session, caller.user)


@router.post(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=with_error_bodies(
        {
            403: {"description": "the current password is wrong, or too many were (lockout)"},
            429: {"description": "too many password checks from this address; see Retry-After"},
        }
    ),
    dependencies=[Depends(limit_password_check)],
)
async def change_password(
    body: PasswordChange,
    caller: CallerDep,
    session: SessionDep,
    database: DatabaseDep,
    client_address: ClientAddressDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> Response:
    """Change the caller's password. Ends the user's other sessions; this one continues.
    Wrong current passwords count in the login lockout; refusals and the change are audited."""
    await users_service.change_password(
        session,
        database,
        settings,
        caller.user,
        current_password=body.current_password,
        new_password=body.new_password,
        keep_sid=caller.sid,
        client_address=client_address,
        now=clock.now(),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
