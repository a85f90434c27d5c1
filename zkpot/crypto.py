"""Ed25519 keys, key files and domain-separated signatures (PyNaCl / libsodium)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from zkpot.codec import digest

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64


@dataclass(frozen=True)
class KeyPair:
    signing_key: SigningKey

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        return cls(SigningKey(seed))

    @property
    def public(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    def sign(self, domain: str, msg: Message) -> bytes:
        return self.signing_key.sign(digest(domain, msg)).signature

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"type": "ed25519", "seed": bytes(self.signing_key).hex(), "public": self.public.hex()})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(data + "\n")

    @classmethod
    def load(cls, path: Path) -> KeyPair:
        data = json.loads(Path(path).read_text())
        if data.get("type") != "ed25519":
            raise ValueError(f"{path}: not an ed25519 key file")
        return cls.from_seed(bytes.fromhex(data["seed"]))


def verify(public_key: bytes, domain: str, msg: Message, signature: bytes) -> bool:
    """True iff `signature` is `public_key`'s signature of `msg` in `domain`."""
    if len(public_key) != PUBLIC_KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        VerifyKey(public_key).verify(digest(domain, msg), signature)
        return True
    except (BadSignatureError, ValueError):
        return False


def verify_digest(public_key: bytes, signed_digest: bytes, signature: bytes) -> bool:
    """verify() for a caller that already holds digest(domain, msg), e.g. a tx id or block hash."""
    if len(public_key) != PUBLIC_KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        VerifyKey(public_key).verify(signed_digest, signature)
        return True
    except (BadSignatureError, ValueError):
        return False


def short(key: bytes) -> str:
    """A short printable name for a key (logs, tables)."""
    return key[:4].hex()
