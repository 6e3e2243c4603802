//! The workspace's test support (`vrift-test`: `TestContext`, the binary under test, trees,
//! digests, S3 servers, corpora), under the name these tests use.
pub use vrift_test::*;
