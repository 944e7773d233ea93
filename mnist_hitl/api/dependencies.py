"""What a route is given rather than builds: the app's one workbench and settings, the token check, and
who is asking: the holder of a named token (:mod:`.tokens`), else the ``X-Reviewer`` header.

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

from mnist_hitl.api.tokens import token_owner
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

BEARER = HTTPBearer(
    auto_error=False,
    description="MNIST_HITL_API_TOKEN, or a named token (MNIST_HITL_API_TOKENS, MNIST_HITL_API_TOKENS_FILE), when set",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as far as their bearer token tells."""

    token: bool  # a configured token was sent
    name: str | None  # the holder of the named token sent (None: the single token, or none)


async def _caller(request: Request) -> Caller:
    # Read here rather than through BEARER, so that a reading route which looks at the token (/queue)
    # does not declare a security requirement it does not have.
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return Caller(token=False, name=None)
    if (owner := token_owner(request.app.state.tokens, given)) is not None:
        return Caller(token=True, name=owner)
    single = request.app.state.settings.api_token
    return Caller(token=single is not None and hmac.compare_digest(given.encode(), single.encode()), name=None)


CurrentCaller = Annotated[Caller, Depends(_caller)]


async def _check_token(request: Request, caller: CurrentCaller, _: Credentials) -> None:
    if request.app.state.settings.api_token is None and not request.app.state.tokens:
        return
    if not caller.token:
        raise HTTPException(
            401,
            "a bearer token is required (MNIST_HITL_API_TOKEN, or a named token of MNIST_HITL_API_TOKENS)",
            headers={"WWW-Authenticate": "Bearer"},
        )


TOKEN_REQUIRED = Depends(_check_token)  # a writing route's dependency: a token, when any is set


# A name a header carries as it is: HTTP header values are ASCII, and a space at either end is not part of them.
REVIEWER_HEADER = r"^[!-~]([ -~]{0,98}[!-~])?$"


async def _reviewer(
    request: Request,
    caller: CurrentCaller,
    x_reviewer: Annotated[
        str | None,
        Header(
            description="who is reviewing: their labels carry this name, and the queue leases what it returns to them"
            " (1-100 printable ASCII characters, no space at either end); none: labels are 'unknown', the queue leases"
            " nothing. With a named token, the reviewer is its holder: a different name here is refused (403)",
            examples=["ada"],
            pattern=REVIEWER_HEADER,
        ),
    ] = None,
) -> str | None:
    """The reviewer: a named token's holder; else the name the client states (any holder of the single token, or
    anyone where no token is set, may state any name). Where named tokens are set, a name stated without a
    token is refused (401): the queue's leases are then only ever a token holder's."""
    stated = None
    if x_reviewer is not None:
        try:
            stated = checked_reviewer(x_reviewer)
        except StoreError as error:
            raise HTTPException(422, str(error)) from None
    if caller.name is not None:
        if stated is not None and stated != caller.name:
            raise HTTPException(
                403, f"X-Reviewer {stated!r} is not the holder of this token ({caller.name!r}): send theirs or none"
            )
        return caller.name
    if stated is not None and request.app.state.tokens and not caller.token:
        raise HTTPException(
            401,
            "with named tokens (MNIST_HITL_API_TOKENS), a reviewer is known by their token: send Authorization: Bearer",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return stated


CurrentReviewer = Annotated[str | None, Depends(_reviewer)]
