"""The artifact contract: the one place that knows what a published version is.

An artifacts root (a local folder or an fsspec URI such as ``s3://bucket/groundrec``) holds

    versions/<id>/        one immutable version (the files below + manifest.json)
    CURRENT               one line: the id of the version to serve, replaced atomically
    .staging/<id>/        a version being written; renamed into versions/ when complete

One module per job: ``layout`` (file names, the manifest, checksums, ids), ``pointer``
(CURRENT), ``activations`` (who made which version current, gate bypasses), ``retention`` (serving markers, gc), ``publisher`` (the only writer: lock,
staging, checksums, rename, CURRENT) and ``store`` (locate or fetch a version to read). The
offline job writes through the publisher, the service and the CLI read through the store;
adding a file to a version is a change in ``layout`` and in the stage that produces it.
The names below are the contract's public surface.
"""

from groundrec.shared.artifact.activations import (ACTIVATIONS, FALLBACK_TRIES, activations, fallbacks,  # noqa: F401
                                                   gate_refused, record_activation)
from groundrec.shared.artifact.layout import (COLLAB_ITEM, COLLAB_QUERY, CURRENT, DEFAULT_STRATEGY,  # noqa: F401
                                              EMBEDDINGS, ENCODER_CONFIG, ENCODER_DIR, ENCODER_ONNX, ENCODER_TOKENIZER,
                                              FIRST_SEEN, FORMAT_VERSION, INDEX, ITEMS, MANIFEST, PROJECT_ITEM, PROJECT_QUERY,
                                              RECENT_INTERACTIONS,
                                              REQUIRED_FILES, SEQUENCE_DIR, SEQUENCE_FILES, SKIPPED, STAGING, VERSION_ID, VERSIONS, WINDOW_INTERACTIONS,
                                              FileEntry,
                                              Manifest, VersionFiles, checksum_tree, created_at, is_version_id,
                                              new_version_id, read_manifest, sequence_files, sha256_file, verify,
                                              write_manifest)
from groundrec.shared.artifact.pointer import (activate, current_lock, current_path, current_version,  # noqa: F401
                                               is_uri, list_versions, newest_verified, version_path)
from groundrec.shared.artifact.publisher import (LOCK, Locked, Publication, clean_staging,  # noqa: F401
                                                 discard_staging, publish, publishing, staging_dir, writer_lock)
from groundrec.shared.artifact.retention import (SERVING, SERVING_FRESH_S, forget_serving, gc,  # noqa: F401
                                                 record_serving, serving_versions)
from groundrec.shared.artifact.store import default_cache_dir, fetch_version, locate  # noqa: F401
