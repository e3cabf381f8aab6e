"""Bearer-token authentication for the job server.

Why this shape: a studio GPU box is shared by a handful of artists, so a static list of long random
tokens (a file or an environment variable) is enough and needs no user database. Each job belongs
to the *hash* of the token that submitted it, so the database and the logs never hold a token, and
one token cannot see another's jobs. Every presented token is compared with every known token with
``hmac.compare_digest`` (no early exit), so response time does not leak how much of a token matched.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

TOKENS_ENV = "TRACK4DGEN_TOKENS"
MIN_TOKEN_LENGTH = 16
#: Owner id of every job when the server runs without tokens (loopback only).
LOCAL_OWNER = "local"


class AuthConfigError(ValueError):
    """The token configuration is unusable (empty file, too-short token...)."""


def token_owner(token: str) -> str:
    """Stable, non-reversible owner id for a token (what the database stores)."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_tokens(text: str, source: str) -> list[str]:
    """One token per line (file) or comma-separated (env); blank lines and ``#`` comments skipped."""
    tokens: list[str] = []
    for raw in text.replace(",", "\n").splitlines():
        tok = raw.split("#", 1)[0].strip()
        if not tok:
            continue
        if len(tok) < MIN_TOKEN_LENGTH:
            raise AuthConfigError(
                f"a token in {source} is only {len(tok)} characters long; tokens must have at least "
                f"{MIN_TOKEN_LENGTH}. Generate one with: python -c \"import secrets; print(secrets.token_urlsafe(32))\""
            )
        if any(c.isspace() for c in tok):
            raise AuthConfigError(f"a token in {source} contains whitespace; use one token per line")
        tokens.append(tok)
    return tokens


def load_tokens(tokens_file: str | Path | None = None, environ: dict[str, str] | None = None) -> list[str]:
    """Tokens from ``--tokens-file`` and/or ``$TRACK4DGEN_TOKENS`` (both are merged)."""
    environ = os.environ if environ is None else environ
    tokens: list[str] = []
    if tokens_file is not None:
        path = Path(tokens_file)
        if not path.is_file():
            raise AuthConfigError(f"tokens file {path} does not exist; write one token per line into it")
        found = parse_tokens(path.read_text(encoding="utf-8"), str(path))
        if not found:
            raise AuthConfigError(f"tokens file {path} holds no token; write one token per line into it")
        tokens += found
    env_value = environ.get(TOKENS_ENV, "")
    if env_value.strip():
        tokens += parse_tokens(env_value, f"${TOKENS_ENV}")
    return list(dict.fromkeys(tokens))  # de-duplicate, keep order


class TokenAuth:
    """Maps an ``Authorization`` header to an owner id, or ``None`` when it is not accepted."""

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = [(t.encode("utf-8"), token_owner(t)) for t in tokens]

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def owner_for(self, authorization: str | None) -> str | None:
        """From a whole ``Authorization`` header value (``Bearer <token>``)."""
        if not self._tokens:
            return LOCAL_OWNER
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.owner_for_token(presented)

    def owner_for_token(self, presented: str | None) -> str | None:
        if not self._tokens:
            return LOCAL_OWNER
        if not presented or not presented.strip():
            return None
        candidate = presented.strip().encode("utf-8")
        owner = None
        for known, known_owner in self._tokens:  # no early exit: constant work per request
            if hmac.compare_digest(candidate, known):
                owner = known_owner
        return owner
