"""Supabase Storage, the little the real worker touches: signed uploads and public reads of one bucket.

Part of the Supabase stand-in (``orchestrator.standins.postgrest``). For an output of 2 MB or more the real
worker asks the app's ``generate-upload-url`` Edge Function for a signed upload URL, ``PUT``s the raw
bytes to it with only a ``Content-Type`` header, then calls ``complete_task`` with the storage path
(banodoco/Reigh-Worker ``source/core/db/*.py``; banodoco/reigh-app
``supabase/functions/generate-upload-url/index.ts``, which calls storage-js ``createSignedUploadUrl`` on
the ``image_uploads`` bucket). Smaller outputs travel base64 inside ``complete_task`` and are stored by it.

Modelled on Supabase Storage (supabase/storage, ``/object/upload/sign/{bucket}/{path}`` and
``/object/public/{bucket}/{path}``):
- ``PUT /storage/v1/object/upload/sign/<bucket>/<path>?token=<token>``: the token must be the one issued
  for that bucket and path and not expired (2 hours, storage's default for signed upload URLs); an
  existing object is refused unless ``x-upsert: true`` (400, ``{"statusCode": "409", "error":
  "Duplicate"}``); more than 50 MiB (the default file size limit) is 413. 200 ``{"Key": "<bucket>/<path>"}``.
- ``GET /storage/v1/object/public/<bucket>/<path>``: the bytes, or 400 ``{"statusCode": "404"}``.
Objects live in memory for the life of the server. Known differences: no buckets API, no RLS on
``storage.objects``, no image transformations, no multipart or resumable uploads, tokens are random
strings rather than JWTs.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from orchestrator.standins.postgrest.common import Reply, json_reply

MEDIA_BUCKET = "image_uploads"
SIGNED_UPLOAD_TTL_SEC = 2 * 3600
MAX_OBJECT_BYTES = 50 * 1024 * 1024
_UPLOAD_PREFIX = "/storage/v1/object/upload/sign/"
_PUBLIC_PREFIX = "/storage/v1/object/public/"


@dataclass(frozen=True)
class StoredObject:
    content_type: str
    data: bytes


def _storage_error(status_code: str, error: str, message: str, http_status: int = 400) -> Reply:
    return json_reply(http_status, {"statusCode": status_code, "error": error, "message": message})


class ObjectStore:
    """The objects and the outstanding signed-upload tokens. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str], StoredObject] = {}
        self._tokens: dict[str, tuple[str, str, float]] = {}

    def sign_upload(self, bucket: str, path: str) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = (bucket, path, time.time() + SIGNED_UPLOAD_TTL_SEC)
        return token

    def put(self, bucket: str, path: str, data: bytes, content_type: str, *, upsert: bool = True) -> bool:
        """Store an object; False when it exists and ``upsert`` is off."""
        with self._lock:
            if not upsert and (bucket, path) in self._objects:
                return False
            self._objects[(bucket, path)] = StoredObject(content_type, data)
            return True

    def get(self, bucket: str, path: str) -> StoredObject | None:
        with self._lock:
            return self._objects.get((bucket, path))

    def exists(self, bucket: str, path: str) -> bool:
        return self.get(bucket, path) is not None

    def handle(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> Reply:
        if path.startswith(_UPLOAD_PREFIX) and method == "PUT":
            return self._signed_put(path[len(_UPLOAD_PREFIX) :], query, headers, body)
        if path.startswith(_PUBLIC_PREFIX) and method in ("GET", "HEAD"):
            bucket, _, key = path[len(_PUBLIC_PREFIX) :].partition("/")
            found = self.get(bucket, key)
            if found is None:
                return _storage_error("404", "not_found", "Object not found")
            return Reply(200, found.data, {"Content-Type": found.content_type})
        return _storage_error(
            "404", "not_found", f"This Storage stand-in does not serve {method} {path}", 404
        )

    def _signed_put(self, rest: str, query: str, headers: dict[str, str], body: bytes) -> Reply:
        bucket, _, key = rest.partition("/")
        token = next((v for k, v in parse_qsl(query) if k == "token"), "")
        with self._lock:
            issued = self._tokens.get(token)
        if issued is None or issued[:2] != (bucket, key):
            return _storage_error("400", "InvalidJWT", "invalid signature")
        if issued[2] < time.time():
            return _storage_error("400", "InvalidJWT", '"exp" claim timestamp check failed')
        if len(body) > MAX_OBJECT_BYTES:
            return _storage_error(
                "413", "Payload too large", "The object exceeded the maximum allowed size", 413
            )
        content_type = headers.get("content-type") or "application/octet-stream"
        upsert = headers.get("x-upsert", "").lower() == "true"
        if not self.put(bucket, key, body, content_type, upsert=upsert):
            return _storage_error("409", "Duplicate", "The resource already exists")
        return json_reply(200, {"Key": f"{bucket}/{key}"})
