"""Builds the adapters from settings: the one place that knows which transport a setting selects."""

from __future__ import annotations

from typing import Any

from orchestrator.config import Settings
from orchestrator.db.base import Database


def make_database(settings: Settings) -> Database:
    """The Database over the transport the settings select (``DB_BACKEND``; Supabase when both)."""
    settings.require(database=True)
    if settings.db_backend == "supabase":
        from orchestrator.db.supabase import SupabaseTransport

        return Database(SupabaseTransport(settings.supabase_url, settings.supabase_service_role_key))
    from orchestrator.db.postgres import PostgresTransport

    return Database(PostgresTransport(settings.database_url, max_size=max(4, min(16, settings.apply_concurrency))))


def make_provider(settings: Settings, **overrides: Any) -> Any:
    """The RunpodClient, configured from the frozen settings only (never the process environment)."""
    from orchestrator.runpod_client import RunpodClient

    kwargs: dict[str, Any] = dict(
        api_key=settings.runpod_api_key or "",
        gpu_type=list(settings.gpu_types),
        worker_image=settings.runpod_worker_image,
        storage_name=settings.runpod_storage_name,
        volume_mount_path=settings.runpod_volume_mount_path,
        disk_size_gb=settings.runpod_disk_size_gb,
        container_disk_gb=settings.runpod_container_disk_gb,
        ssh_public_key_path=settings.runpod_ssh_public_key_path,
        ssh_private_key_path=settings.runpod_ssh_private_key_path,
        supabase_url=settings.supabase_url,
        supabase_service_role_key=settings.supabase_service_role_key,
        supabase_anon_key=settings.supabase_anon_key,
        api=settings.runpod_api,
        api_base_url=settings.runpod_api_base_url,
        ssh_connect_timeout=settings.ssh_connect_timeout_sec,
        ssh_command_timeout=settings.ssh_command_timeout_sec,
        env={},
    )
    kwargs.update(overrides)
    return RunpodClient(**kwargs)
