"""Backups of the service's database and active model artifacts: `create_backup`,
`verify_backup`, `restore_backup`, `list_backups`, `prune_backups`.

One module per job: `archive` (the file format, names, listing, reading and checking one),
`crypto` (AES-256-GCM in chunks, the `BACKUP_KEY`), `create` and `restore`.
"""

from app.services.backup.archive import (
    BackupError,
    BackupFile,
    Manifest,
    list_backups,
    mongorestore_command,
    prune_backups,
    read_archive,
    verify_backup,
)
from app.services.backup.create import create_backup
from app.services.backup.crypto import BackupCryptoError, parse_key
from app.services.backup.restore import RestoreReport, recover_interrupted, restore_backup

__all__ = [
    "BackupCryptoError",
    "BackupError",
    "BackupFile",
    "Manifest",
    "RestoreReport",
    "create_backup",
    "list_backups",
    "mongorestore_command",
    "parse_key",
    "prune_backups",
    "read_archive",
    "recover_interrupted",
    "restore_backup",
    "verify_backup",
]
