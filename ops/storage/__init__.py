"""What the ops jobs share: S3 settings and client, the sealed (chunked AES-256-GCM) object format, errors, metrics."""
