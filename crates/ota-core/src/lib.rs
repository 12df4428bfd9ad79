//! The OTA server's domain: checked values, the rules that decide which
//! firmware a device is offered and how an update attempt may move, signed
//! download links, and the JSON shapes on the wire. Nothing here does I/O, so
//! every rule is unit-testable.

pub mod esp;
pub mod link;
pub mod names;
pub mod offer;
pub mod rollout;
pub mod status;
pub mod time;
pub mod units;
pub mod version;
pub mod wire;

pub use link::{LinkError, LinkSigner};
pub use names::{Channel, DeviceId, DeviceType, FileName, GroupName, NameError, Percent, Sha256Hex};
pub use offer::{Candidate, Choice, DeviceFacts, Gate, OfferKind, choose, rollout_bucket, select_offer};
pub use status::{OtaStatus, Transition, TransitionError, transition};
pub use version::{Version, VersionError};
