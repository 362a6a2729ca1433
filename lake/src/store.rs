//! Object storage: a local directory by default, any S3-compatible store by URL.
//!
//! `file:///abs/dir`, a plain path, or `s3://bucket/prefix` (endpoint, region and credentials from
//! the usual `AWS_*` environment variables, e.g. `AWS_ENDPOINT=http://127.0.0.1:9000` and
//! `AWS_ALLOW_HTTP=true` for MinIO). On a local directory every write is fsync'd (file and
//! directory) before `put` returns, so "durable" means durable across a power cut, not only a
//! process crash; S3 writes are durable when the PUT returns.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// An error of the object store; every variant names the store's URL as it was given.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Listing keys failed.
    #[error("store {url}: {source}")]
    Store {
        /// The store's URL.
        url: String,
        /// object_store's error.
        source: object_store::Error,
    },
    /// Reading, writing or deleting one object failed.
    #[error("store {url}: object {key}: {source}")]
    Object {
        /// The store's URL.
        url: String,
        /// Key of the object, relative to the store root.
        key: String,
        /// object_store's error.
        source: object_store::Error,
    },
    /// The URL cannot be opened: an unsupported scheme, no bucket, a local directory that
    /// cannot be created or does not exist, or an S3 client that cannot be configured.
    #[error("store URL {url:?}: {problem}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A local file operation failed: the fsync of a written object or of its directory, or
    /// the copy, read or write of the local file in [`Store::put_file`] or [`Store::get_file`].
    #[error("store {url}: syncing {path}: {source}")]
    Sync {
        /// The store's URL.
        url: String,
        /// The local path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A handle on the pipeline's object store. Cheap to clone: clones share one client.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// The store as delta-rs wants it: "/" at the root of the file system or bucket, and the
    /// URL of the store root inside it (tables live below).
    delta_root: Arc<dyn ObjectStore>,
    root_url: url::Url,
    local_root: Option<PathBuf>,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

impl Store {
    /// Opens `url`: `file:///dir`, a path, or `s3://bucket[/prefix]`. A local directory is
    /// created if missing. S3 takes its endpoint, region and credentials from `AWS_*` variables
    /// and commits Delta entries with conditional puts. Other schemes are refused.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let bad = |problem: String| StoreError::Url {
            url: url.to_owned(),
            problem,
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name".into()));
            }
            // Delta commits are safe on S3 only if "create this log entry unless it exists" is
            // atomic: object_store's conditional put (If-None-Match) gives exactly that, so no
            // external lock (DynamoDB) is needed. Stores without it refuse the commit rather than
            // risk two writers taking one version.
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
                // A few quick retries of a failed request, then the error: the aggregator
                // waits a longer outage out itself, saying so in its logs and metrics,
                // instead of blocking silently for object_store's default three minutes.
                .with_retry(object_store::RetryConfig {
                    max_retries: 3,
                    retry_timeout: std::time::Duration::from_secs(30),
                    ..Default::default()
                })
                .build()
                .map_err(|e| bad(e.to_string()))?;
            let s3: Arc<dyn ObjectStore> = Arc::new(s3);
            let prefix = prefix.trim_matches('/');
            let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
                s3.clone()
            } else {
                Arc::new(PrefixStore::new(s3.clone(), prefix))
            };
            crate::delta::register_s3();
            let root_url = url::Url::parse(&format!("s3://{bucket}/{prefix}"))
                .map_err(|e| bad(e.to_string()))?;
            return Ok(Store {
                inner,
                delta_root: s3,
                root_url,
                local_root: None,
                url: url.to_owned(),
            });
        }
        let dir = match url.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None if url.contains("://") => {
                return Err(bad("only file:// and s3:// stores are supported".into()))
            }
            None => PathBuf::from(url),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
        let dir = dir.canonicalize().map_err(|e| bad(e.to_string()))?;
        let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?;
        let root_url = url::Url::from_directory_path(&dir)
            .map_err(|()| bad(format!("{} is not an absolute directory", dir.display())))?;
        Ok(Store {
            inner: Arc::new(fs),
            delta_root: Arc::new(LocalFileSystem::new()),
            root_url,
            local_root: Some(dir),
            url: url.to_owned(),
        })
    }

    /// The URL the store was opened with, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens `url` for reading only: a local directory must already exist (a typo in a job's
    /// `--store` is an error, not an empty report).
    pub fn open_existing(url: &str) -> Result<Self, StoreError> {
        let local = match url.strip_prefix("file://") {
            Some(p) => Some(PathBuf::from(p)),
            None if url.contains("://") => None,
            None => Some(PathBuf::from(url)),
        };
        if let Some(dir) = local {
            if !dir.is_dir() {
                return Err(StoreError::Url {
                    url: url.to_owned(),
                    problem: format!(
                        "{} does not exist (run the aggregator first, or check --store)",
                        dir.display()
                    ),
                });
            }
        }
        Self::open(url)
    }

    /// URL of a location below the store root (a table's root, for delta-rs).
    pub(crate) fn url_of(&self, path: &str) -> url::Url {
        let mut base = self.root_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        base.join(&format!("{}/", path.trim_matches('/')))
            .expect("table paths are relative URL paths")
    }

    /// The object store with "/" at the file system or bucket root (what delta-rs expects).
    pub(crate) fn delta_root(&self) -> Arc<dyn ObjectStore> {
        self.delta_root.clone()
    }

    /// The object store rooted at the store root.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    fn obj_err(&self, key: &str) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
        let key = key.to_owned();
        move |source| StoreError::Object {
            url: self.url.clone(),
            key,
            source,
        }
    }

    /// Writes an object and returns once it is durable.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.inner
            .put(&Path::from(key), PutPayload::from(bytes))
            .await
            .map_err(self.obj_err(key))?;
        self.sync_local(key)
    }

    /// Writes an object only if none exists under `key` (a conditional put: on S3 through
    /// `If-None-Match`): `false` when another writer got there first, whose object stays.
    pub async fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<bool, StoreError> {
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&Path::from(key), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => {
                self.sync_local(key)?;
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.obj_err(key)(e)),
        }
    }

    /// On a local store, fsyncs an object's file and its directory (object_store does not):
    /// "durable" means durable.
    fn sync_local(&self, key: &str) -> Result<(), StoreError> {
        if let Some(root) = &self.local_root {
            let file = root.join(key);
            let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
            for p in [Some(file.as_path()), file.parent()].into_iter().flatten() {
                sync(p).map_err(|source| StoreError::Sync {
                    url: self.url.clone(),
                    path: p.to_path_buf(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Writes a local file as an object, streamed (multipart on S3), and returns once it is
    /// durable: a large file is never held in memory whole. Returns the bytes copied. On a
    /// local store the copy is written beside the target and renamed over it.
    pub async fn put_file(&self, key: &str, file: &std::path::Path) -> Result<u64, StoreError> {
        use tokio::io::AsyncWriteExt;
        let io = |source: std::io::Error| StoreError::Sync {
            url: self.url.clone(),
            path: file.to_path_buf(),
            source,
        };
        let n = if let Some(root) = &self.local_root {
            // A local store: a file copy (beside the target, then renamed), no buffers at all.
            let target = root.join(key);
            let tmp = target.with_extension("tmp");
            if let Some(dir) = target.parent() {
                tokio::fs::create_dir_all(dir).await.map_err(io)?;
            }
            let n = tokio::fs::copy(file, &tmp).await.map_err(io)?;
            tokio::fs::rename(&tmp, &target).await.map_err(io)?;
            n
        } else {
            // Multipart parts of 8 MiB, two in flight: memory stays at a few tens of MiB
            // whatever the file's size.
            let mut src = tokio::fs::File::open(file).await.map_err(io)?;
            let mut dst = object_store::buffered::BufWriter::with_capacity(
                self.inner.clone(),
                Path::from(key),
                8 << 20,
            )
            .with_max_concurrency(2);
            let n = tokio::io::copy(&mut src, &mut dst).await.map_err(io)?;
            dst.shutdown().await.map_err(io)?;
            n
        };
        self.sync_local(key)?;
        Ok(n)
    }

    /// Reads an object into a local file (created or truncated), streamed and fsync'd; returns
    /// its size in bytes.
    pub async fn get_file(&self, key: &str, file: &std::path::Path) -> Result<u64, StoreError> {
        use tokio::io::AsyncWriteExt;
        let io = |source: std::io::Error| StoreError::Sync {
            url: self.url.clone(),
            path: file.to_path_buf(),
            source,
        };
        if let Some(root) = &self.local_root {
            let n = tokio::fs::copy(root.join(key), file).await.map_err(io)?;
            tokio::fs::File::open(file)
                .await
                .map_err(io)?
                .sync_all()
                .await
                .map_err(io)?;
            return Ok(n);
        }
        let mut stream = self
            .inner
            .get(&Path::from(key))
            .await
            .map_err(self.obj_err(key))?
            .into_stream();
        let mut out = tokio::fs::File::create(file).await.map_err(io)?;
        let mut n = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(self.obj_err(key))? {
            out.write_all(&chunk).await.map_err(io)?;
            n += chunk.len() as u64;
        }
        out.sync_all().await.map_err(io)?;
        Ok(n)
    }

    /// Reads a whole object into memory.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let r = self
            .inner
            .get(&Path::from(key))
            .await
            .map_err(self.obj_err(key))?;
        r.bytes().await.map_err(self.obj_err(key))
    }

    /// Keys under a prefix (recursively), relative to the store root, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let p = Path::from(prefix);
        let mut keys: Vec<String> = self
            .inner
            .list(Some(&p))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .map_err(|source| StoreError::Store {
                url: self.url.clone(),
                source,
            })?;
        keys.sort();
        Ok(keys)
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.obj_err(key)(e)),
        }
    }
}

/// Whether `error` (or an error it was caused by) is the object store failing to answer or to
/// write (a network error, a server error after object_store's own retries, a file system that
/// refuses writes) rather than an answer about the data (not found, already exists, a failed
/// precondition). Such a failure is worth waiting out: the same request may succeed later.
pub fn is_unavailable(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = e {
        // Errors that box object_store's (a large type) show the box in the chain; delta-rs's
        // kernel holds one without exposing it as a source.
        let delta = err
            .downcast_ref::<deltalake::DeltaTableError>()
            .or_else(|| {
                err.downcast_ref::<Box<deltalake::DeltaTableError>>()
                    .map(|b| &**b)
            });
        // Some of delta-rs's paths (a snapshot's update among them) keep only the text of the
        // kernel's error, with no source: a store that failed to answer reads "Error interacting
        // with object store: Generic <store> error: …", an answer about the data (not found)
        // does not say "Generic".
        if let Some(deltalake::DeltaTableError::Generic(text)) = delta {
            return text
                .strip_prefix("Error interacting with object store: ")
                .is_some_and(|rest| rest.starts_with("Generic "));
        }
        let kernel = match delta {
            Some(deltalake::DeltaTableError::KernelError(buoyant_kernel::Error::ObjectStore(
                os,
            ))) => Some(os),
            _ => None,
        };
        let os = err
            .downcast_ref::<object_store::Error>()
            .or_else(|| err.downcast_ref::<Box<object_store::Error>>().map(|b| &**b))
            .or(kernel);
        if let Some(os) = os {
            return matches!(
                os,
                object_store::Error::Generic { .. }
                    | object_store::Error::JoinError { .. }
                    | object_store::Error::PermissionDenied { .. }
            );
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return !matches!(
                io.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::AlreadyExists
            );
        }
        e = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic() -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: "error sending request: connection refused".into(),
        }
    }

    #[test]
    fn a_store_failure_is_recognised_however_deep_delta_rs_holds_it() {
        let direct = anyhow::Error::new(generic()).context("reading a file");
        assert!(direct.chain().any(is_unavailable));
        // The kernel's ObjectStore variant does not expose the error as its source.
        let kernel =
            deltalake::DeltaTableError::KernelError(buoyant_kernel::Error::ObjectStore(generic()));
        let wrapped = anyhow::Error::new(kernel).context("table services_daily");
        assert!(wrapped.chain().any(is_unavailable));
        // Flattened to text by delta-rs (seen when an S3 server was down during a rebalance).
        let flattened = deltalake::DeltaTableError::Generic(format!(
            "{}",
            buoyant_kernel::Error::ObjectStore(generic())
        ));
        assert!(anyhow::Error::new(flattened).chain().any(is_unavailable));
        let not_found_text = deltalake::DeltaTableError::Generic(format!(
            "{}",
            buoyant_kernel::Error::ObjectStore(object_store::Error::NotFound {
                path: "x".into(),
                source: "gone".into(),
            })
        ));
        assert!(!anyhow::Error::new(not_found_text)
            .chain()
            .any(is_unavailable));
        let not_found = anyhow::Error::new(object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        });
        assert!(
            !not_found.chain().any(is_unavailable),
            "an answer about the data"
        );
    }
}
