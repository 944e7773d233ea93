"""What a route is given rather than builds: the app's one workbench and settings, the token check, and
who is asking (the ``X-Reviewer`` header).

The application (:func:`mnist_hitl.api.server.create_app`) keeps them on ``app.state``; a route
names them in its parameters (``workbench: CurrentWorkbench``) and FastAPI hands them over.
The dependencies are ``async``: FastAPI runs a plain function in its thread pool, and these
only read an attribute. The routes that use the store are plain functions, run on that pool.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mnist_hitl.config import Settings
from mnist_hitl.store import StoreError
from mnist_hitl.store.rows import checked_reviewer
from mnist_hitl.workbench import Workbench


async def _workbench(request: Request) -> Workbench:
    return request.app.state.workbench


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


@dataclass
class Readiness:
    """What the readiness probes of one app share: the store check in flight, the export last found whole."""

    store_check: asyncio.Future | None = None
    export_checked: tuple | None = None  # (path, mtime, size, inode) of the export whose checksum matched


async def _readiness(request: Request) -> Readiness:
    if not hasattr(request.app.state, "readiness"):
        request.app.state.readiness = Readiness()
    return request.app.state.readiness


CurrentWorkbench = Annotated[Workbench, Depends(_workbench)]
CurrentSettings = Annotated[Settings, Depends(_settings)]
CurrentReadiness = Annotated[Readiness, Depends(_readiness)]

BEARER = HTTPBearer(auto_error=False, description="MNIST_HITL_API_TOKEN, when it is set")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


async def _check_token(settings: CurrentSettings, credentials: Credentials) -> None:
    token = settings.api_token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            401, "a bearer token is required (MNIST_HITL_API_TOKEN)", headers={"WWW-Authenticate": "Bearer"}
        )


TOKEN_REQUIRED = Depends(_check_token)  # a writing route's dependency: MNIST_HITL_API_TOKEN, when it is set


# A name a header carries as it is: HTTP header values are ASCII, and a space at either end is not part of them.
REVIEWER_HEADER = r"^[!-~]([ -~]{0,98}[!-~])?$"


async def _reviewer(
    x_reviewer: Annotated[
        str | None,
        Header(
            description="who is reviewing: their labels carry this name, and the queue leases what it returns to them"
            " (1-100 printable ASCII characters, no space at either end); none: labels are 'unknown', the queue leases"
            " nothing",
            examples=["ada"],
            pattern=REVIEWER_HEADER,
        ),
    ] = None,
) -> str | None:
    """The reviewer's name as the client states it (not authenticated: any holder of the token may state any name)."""
    if x_reviewer is None:
        return None
    try:
        return checked_reviewer(x_reviewer)
    except StoreError as error:
        raise HTTPException(422, str(error)) from None


CurrentReviewer = Annotated[str | None, Depends(_reviewer)]
