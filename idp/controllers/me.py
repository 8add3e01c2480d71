"""The caller's own account."""

from __future__ import annotations

from fastapi import APIRouter

from idp.dependencies.auth import CallerDep
from idp.dependencies.database import SessionDep
from idp.schemas.users import Profile
from idp.services import users as users_service

router = APIRouter(tags=["me"])


@router.get("/me", response_model=Profile)
async def me(caller: CallerDep, session: SessionDep) -> Profile:
    """The caller's profile, roles and effective permissions as the database has them now."""
    return await users_service.profile(session, caller.user)
