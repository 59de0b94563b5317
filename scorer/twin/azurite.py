"""Azurite, the Blob Storage of this machine: its published development account, and
starting the project's Azurite (scripts/azurite) when nothing answers."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Azurite's published development account key (not a secret)
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(port: int = 10000) -> str:
    """Azurite's published development account (not a secret)."""
    return ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")


def connection_parts(connection_string: str) -> dict[str, str]:
    """A storage connection string's parts: AccountName, AccountKey, BlobEndpoint, ..."""
    return dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)


def port_answering(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def ensure_azurite(port: int = 10000) -> None:
    """Start the project's Azurite if nothing answers on the port."""
    if port_answering(port):
        return
    print(f"starting Azurite on 127.0.0.1:{port}", flush=True)
    subprocess.run([str(ROOT / "scripts" / "azurite")], env=dict(os.environ, AZURITE_PORT=str(port)), check=True,
                   stdout=subprocess.DEVNULL)
