"""The one settings object, read from JITGATE_* environment variables (app settings in Azure)."""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal

Mode = Literal["local", "azure", "gcp"]

DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "policies" / "example.yaml"


@dataclass(frozen=True)
class Settings:
    """Everything configurable. `local` is the embedded default: SQLite under `data_dir`."""

    mode: Mode = "local"
    data_dir: Path = Path(".jitgate")
    policy_path: Path = DEFAULT_POLICY
    requests_queue: str = "access-requests"
    lifecycle_queue: str = "access-lifecycle"
    teams_secret: str = ""  # base64, as Teams shows it when the outgoing webhook is created
    reconcile_interval: timedelta = timedelta(seconds=60)
    lock_duration: timedelta = timedelta(seconds=30)
    max_delivery_count: int = 10
    poll_interval: float = 0.05
    workers: int = 2
    public_url: str = ""
    seed_file: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.mode == "local"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        mode = e.get("JITGATE_MODE", "local")
        if mode not in ("local", "azure", "gcp"):
            raise ValueError(f"JITGATE_MODE must be local, azure or gcp, not {mode!r}")
        base = cls(mode=mode)  # type: ignore[arg-type]
        seed = e.get("JITGATE_SEED_FILE")
        return replace(
            base,
            data_dir=Path(e.get("JITGATE_DATA_DIR", str(base.data_dir))),
            policy_path=Path(e.get("JITGATE_POLICY", str(base.policy_path))),
            requests_queue=e.get("JITGATE_REQUESTS_QUEUE", base.requests_queue),
            lifecycle_queue=e.get("JITGATE_LIFECYCLE_QUEUE", base.lifecycle_queue),
            teams_secret=e.get("JITGATE_TEAMS_SECRET", ""),
            reconcile_interval=timedelta(seconds=float(e.get("JITGATE_RECONCILE_SECONDS", "60"))),
            lock_duration=timedelta(seconds=float(e.get("JITGATE_LOCK_SECONDS", "30"))),
            max_delivery_count=int(e.get("JITGATE_MAX_DELIVERIES", "10")),
            workers=int(e.get("JITGATE_WORKERS", "2")),
            public_url=e.get("JITGATE_PUBLIC_URL", ""),
            seed_file=Path(seed) if seed else None,
        )

    def resolved_teams_secret(self) -> bytes:
        """The outgoing-webhook HMAC key. Locally one is generated once and kept in the data dir, so the
        CLI (`jitgate teams approve`) and the server agree; elsewhere it must be configured."""
        if self.teams_secret:
            return base64.b64decode(self.teams_secret)
        if not self.local:
            raise ValueError("JITGATE_TEAMS_SECRET is required outside local mode")
        path = self.data_dir / "teams-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
            path.chmod(0o600)
        return base64.b64decode(path.read_text().strip())
