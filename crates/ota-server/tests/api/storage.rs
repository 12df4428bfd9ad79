//! The firmware store of a test server, looked at from outside as an
//! operator would (`ls`, `aws s3 ls`): the same helpers whether the server
//! keeps firmware in its folder or, with `OTA_TEST_STORAGE_URL`, in a bucket.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use ota_server::blobs::StorageLocation;

use crate::helpers::{TestApp, files_under};

/// Whether the tests run on S3 (`OTA_TEST_STORAGE_URL` set, not empty).
pub fn on_s3() -> bool {
    std::env::var_os("OTA_TEST_STORAGE_URL").is_some_and(|url| !url.is_empty())
}

/// A test server's firmware store.
pub enum TestStorage {
    Folder(std::path::PathBuf),
    Bucket { s3: AmazonS3, prefix: String },
}

impl TestStorage {
    /// An S3 client with the test run's `AWS_*` settings, for `s3://bucket/prefix`.
    pub fn bucket(storage_url: &str) -> Self {
        let rest = storage_url.strip_prefix("s3://").expect("an s3:// URL");
        let rest = rest.split('?').next().unwrap();
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .expect("the test S3 client builds from AWS_*");
        TestStorage::Bucket {
            s3,
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    fn key(prefix: &str, relative: &str) -> Path {
        if prefix.is_empty() {
            Path::from(relative)
        } else {
            Path::from(format!("{prefix}/{relative}"))
        }
    }

    /// Every object (file) in the store, as paths relative to its root,
    /// temporaries under `.incoming/` included; sorted.
    pub async fn objects(&self) -> Vec<String> {
        match self {
            TestStorage::Folder(root) => files_under(root)
                .into_iter()
                .map(|path| path.strip_prefix(root).unwrap().to_string_lossy().into_owned())
                .collect(),
            TestStorage::Bucket { s3, prefix } => {
                use futures_util::TryStreamExt;
                let listed: Vec<_> = s3
                    .list((!prefix.is_empty()).then(|| Path::from(prefix.as_str())).as_ref())
                    .try_collect()
                    .await
                    .expect("the test bucket lists");
                let mut keys: Vec<String> = listed
                    .into_iter()
                    .map(|meta| {
                        let key = meta.location.to_string();
                        key.strip_prefix(&format!("{prefix}/")).unwrap_or(&key).to_owned()
                    })
                    .collect();
                keys.sort();
                keys
            }
        }
    }

    /// The bytes of a stored object, if there is one.
    pub async fn read(&self, relative: &str) -> Option<Vec<u8>> {
        match self {
            TestStorage::Folder(root) => std::fs::read(root.join(relative)).ok(),
            TestStorage::Bucket { s3, prefix } => match s3.get(&Self::key(prefix, relative)).await {
                Ok(got) => Some(got.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("reading {relative} from the test bucket: {e}"),
            },
        }
    }

    /// Puts an object in place by hand, behind the server's back.
    pub async fn write(&self, relative: &str, bytes: &[u8]) {
        match self {
            TestStorage::Folder(root) => {
                let path = root.join(relative);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            TestStorage::Bucket { s3, prefix } => {
                s3.put(&Self::key(prefix, relative), bytes.to_vec().into())
                    .await
                    .expect("writing to the test bucket");
            }
        }
    }
}

impl TestApp {
    /// The server's firmware store, as its settings name it.
    pub fn storage(&self) -> TestStorage {
        let settings = self.state.settings();
        match StorageLocation::parse(settings.storage_url.as_deref(), &settings.data_dir).unwrap() {
            StorageLocation::Folder(root) => TestStorage::Folder(root),
            StorageLocation::Bucket(_) => TestStorage::bucket(settings.storage_url.as_deref().unwrap()),
        }
    }

    /// Every object in the firmware store (see [`TestStorage::objects`]).
    pub async fn stored_objects(&self) -> Vec<String> {
        self.storage().objects().await
    }

    /// The stored bytes of `relative` (`<device_type>/<file>`), if any.
    pub async fn stored_object(&self, relative: &str) -> Option<Vec<u8>> {
        self.storage().read(relative).await
    }

    /// Puts bytes at `relative` in the firmware store by hand.
    pub async fn put_object(&self, relative: &str, bytes: &[u8]) {
        self.storage().write(relative, bytes).await
    }
}
