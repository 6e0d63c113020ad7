"""The registry aliases every service agrees on: `production` takes unpinned traffic and is
moved only through the promotion gate; `canary` takes its traffic weight's share."""

from __future__ import annotations

PRODUCTION = "production"
CANARY = "canary"
FOLLOWED = (PRODUCTION, CANARY)
