"""`aether ops backup` / `aether ops restore`: encrypted pg_dump backups in S3, their retention and the restore drill."""
