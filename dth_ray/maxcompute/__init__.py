"""MaxCompute (ODPS) tables into the S3 data lake: a direct Tunnel→Parquet export and the seed's UNLOAD→OSS→S3 flow.

plan (pure: partition specs, Hive paths, row ranges, UNLOAD SQL, `_SUCCESS` manifests) → client (pyodps,
errors mapped once) → parquet_sink (Arrow batches into S3 multipart uploads, bounded memory) → worker (the
export actor's plain class) → state (per-job SQLite of partitions and finished shards) → runner (the only Ray
code here: shards over actors, `_SUCCESS` per partition) and unload (UNLOAD, then the normal sync engine).
"""
