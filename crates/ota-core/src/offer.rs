//! Which firmware a device is offered, as one pure function.

use sha2::{Digest, Sha256};

use crate::names::{Channel, DeviceId, Percent};
use crate::rollout::{Arm, RolloutState, arm_of, cohort_bucket, stage_of};
use crate::version::Version;

/// What a device told us about itself when it asked.
#[derive(Debug, Clone)]
pub struct DeviceFacts<'a> {
    pub device_id: &'a DeviceId,
    pub current_version: &'a Version,
    pub build_number: Option<i64>,
    pub channel: &'a Channel,
    /// The device's anti-rollback counter (its eFuse `secure_version`), when
    /// known: reported now, or kept in the inventory from an earlier report.
    pub secure_version: Option<u32>,
    /// The ids of the groups the device is in.
    pub groups: &'a [i64],
    /// Firmware this device already rolled back from: never offered to it again.
    pub refused: &'a [i64],
}

/// A firmware the device might be offered: an active build of its type.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub firmware_id: i64,
    pub version: Version,
    pub build_number: Option<i64>,
    pub min_version: Option<Version>,
    pub is_stable: bool,
    pub is_active: bool,
    pub rollout: Percent,
    /// The image's `secure_version`, for ESP app images.
    pub secure_version: Option<u32>,
    /// Recalled: never offered, and devices running it are taken back.
    pub recalled: bool,
    /// Groups the firmware is for (a device must be in one); empty: all.
    pub target_groups: Vec<i64>,
    /// The rollout that decides who is offered it, instead of `rollout`.
    pub gate: Option<Gate>,
}

/// What a firmware's rollout lets through.
#[derive(Debug, Clone)]
pub struct Gate {
    pub rollout_id: i64,
    pub state: RolloutState,
    /// The cumulative percentages of the stages, and the current stage.
    pub stages: Vec<Percent>,
    pub stage: usize,
    /// The firmware whose bucket orders devices into stages (arm A's, so
    /// both arms of an A/B rollout share one cohort).
    pub cohort_key: i64,
    /// In an A/B rollout: this firmware's arm and the variant's share.
    pub arm: Option<(Arm, Percent)>,
    /// The rollout's target groups (a device must be in one); empty: all.
    pub groups: Vec<i64>,
}

impl Gate {
    /// The stage a device joins in (whatever the current stage is), when it
    /// is in the target at all.
    pub fn device_stage(&self, device: &DeviceFacts<'_>) -> Option<usize> {
        if !in_groups(&self.groups, device.groups) {
            return None;
        }
        if let Some((arm, variant)) = self.arm
            && arm_of(device.device_id, self.rollout_id, variant) != arm
        {
            return None;
        }
        stage_of(cohort_bucket(device.device_id, self.cohort_key), &self.stages)
    }

    /// Whether the device is offered the firmware now.
    pub fn admits(&self, device: &DeviceFacts<'_>) -> bool {
        self.state.offers()
            && self
                .device_stage(device)
                .is_some_and(|stage| self.state == RolloutState::Completed || stage <= self.stage)
    }
}

fn in_groups(targets: &[i64], device_groups: &[i64]) -> bool {
    targets.is_empty() || targets.iter().any(|g| device_groups.contains(g))
}

/// The rollout bucket of a device for a firmware, in `0..10_000`.
///
/// A hash of both ids, so the same device always lands in the same bucket for
/// the same firmware, while each firmware's rollout picks its own first
/// devices (the same early devices do not carry every risky release).
pub fn rollout_bucket(device_id: &DeviceId, firmware_id: i64) -> u16 {
    let digest = Sha256::new()
        .chain_update(firmware_id.to_le_bytes())
        .chain_update(device_id.as_str().as_bytes())
        .finalize();
    let head = u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"));
    (head % 10_000) as u16
}

/// Whether a firmware rolled out to `rollout` percent of devices includes this one.
pub fn in_rollout(device_id: &DeviceId, firmware_id: i64, rollout: Percent) -> bool {
    u32::from(rollout_bucket(device_id, firmware_id)) < u32::from(rollout.get()) * 100
}

fn is_newer(candidate: &Candidate, device: &DeviceFacts<'_>) -> bool {
    match candidate.version.cmp(device.current_version) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => match (candidate.build_number, device.build_number) {
            (Some(offered), Some(running)) => offered > running,
            _ => false,
        },
    }
}

/// Whether a device with anti-rollback could boot the image at all: its
/// bootloader erases an image whose `secure_version` is below the device's
/// counter. Every path that offers firmware goes through [`is_eligible`], so
/// such an image is never offered, whatever else is configured.
pub fn passes_anti_rollback(candidate: &Candidate, device: &DeviceFacts<'_>) -> bool {
    match (candidate.secure_version, device.secure_version) {
        (Some(image), Some(device)) => image >= device,
        _ => true,
    }
}

/// Whether the firmware is for this device at all, apart from versions:
/// active, not recalled, bootable under anti-rollback, not rolled back from
/// before, in the device's channel, its groups and its rollout.
fn reaches(candidate: &Candidate, device: &DeviceFacts<'_>) -> bool {
    candidate.is_active
        && !candidate.recalled
        && passes_anti_rollback(candidate, device)
        && !device.refused.contains(&candidate.firmware_id)
        && (candidate.is_stable || device.channel.admits_prerelease())
        && in_groups(&candidate.target_groups, device.groups)
        && match &candidate.gate {
            Some(gate) => gate.admits(device),
            None => in_rollout(device.device_id, candidate.firmware_id, candidate.rollout),
        }
}

/// Whether this device may be offered this firmware as an update.
pub fn is_eligible(candidate: &Candidate, device: &DeviceFacts<'_>) -> bool {
    reaches(candidate, device)
        && is_newer(candidate, device)
        && candidate
            .min_version
            .as_ref()
            .is_none_or(|min| min <= device.current_version)
}

/// The firmware to offer: of the eligible candidates, the highest version,
/// ties broken by the higher build number and then the newer record.
pub fn select_offer<'c>(
    candidates: impl IntoIterator<Item = &'c Candidate>,
    device: &DeviceFacts<'_>,
) -> Option<&'c Candidate> {
    candidates
        .into_iter()
        .filter(|candidate| is_eligible(candidate, device))
        .max_by(|a, b| {
            a.version
                .cmp(&b.version)
                .then(a.build_number.cmp(&b.build_number))
                .then(a.firmware_id.cmp(&b.firmware_id))
        })
}

/// Why a firmware is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferKind {
    /// The best update.
    Update,
    /// The version the device is pinned to (older or newer).
    Pinned,
    /// The device runs a recalled version: the previous good one.
    Recall,
}

/// An offer and why it is made.
#[derive(Debug, Clone, Copy)]
pub struct Choice<'c> {
    pub candidate: &'c Candidate,
    pub kind: OfferKind,
    /// Whether the offered version is below the one the device runs.
    pub downgrade: bool,
}

/// The whole decision for one device: a pin first, then the best update,
/// then, for a device running a recalled version, the previous good one.
///
/// * **Pinned** devices are offered exactly their pinned firmware while
///   they run anything else — older means a downgrade — as long as it is
///   active, not recalled and bootable under anti-rollback; nothing else.
/// * **Recall:** a device whose version is recalled and that has no update
///   is offered the highest version below it that reaches it (active, not
///   recalled, its channel, groups and rollout, and anti-rollback).
pub fn choose<'c>(
    candidates: &'c [&'c Candidate],
    device: &DeviceFacts<'_>,
    pinned: Option<i64>,
) -> Option<Choice<'c>> {
    if let Some(pinned) = pinned {
        let candidate = candidates.iter().copied().find(|c| c.firmware_id == pinned)?;
        let usable = candidate.is_active && !candidate.recalled && passes_anti_rollback(candidate, device);
        let runs_it = candidate.version == *device.current_version
            && (candidate.build_number.is_none() || candidate.build_number == device.build_number);
        return (usable && !runs_it).then_some(Choice {
            candidate,
            kind: OfferKind::Pinned,
            downgrade: candidate.version < *device.current_version,
        });
    }
    if let Some(candidate) = select_offer(candidates.iter().copied(), device) {
        return Some(Choice {
            candidate,
            kind: OfferKind::Update,
            downgrade: false,
        });
    }
    let runs_recalled = candidates
        .iter()
        .any(|c| c.recalled && c.version == *device.current_version);
    if !runs_recalled {
        return None;
    }
    candidates
        .iter()
        .copied()
        .filter(|c| c.version < *device.current_version && reaches(c, device))
        .max_by(|a, b| {
            a.version
                .cmp(&b.version)
                .then(a.build_number.cmp(&b.build_number))
                .then(a.firmware_id.cmp(&b.firmware_id))
        })
        .map(|candidate| Choice {
            candidate,
            kind: OfferKind::Recall,
            downgrade: true,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn stable(id: i64, version: &str) -> Candidate {
        Candidate {
            firmware_id: id,
            version: v(version),
            build_number: None,
            min_version: None,
            is_stable: true,
            is_active: true,
            rollout: Percent::FULL,
            secure_version: None,
            recalled: false,
            target_groups: Vec::new(),
            gate: None,
        }
    }

    struct Device {
        id: DeviceId,
        version: Version,
        build: Option<i64>,
        channel: Channel,
        secure_version: Option<u32>,
        groups: Vec<i64>,
        refused: Vec<i64>,
    }

    impl Device {
        fn running(version: &str) -> Self {
            Device {
                id: DeviceId::parse("tab5-0001").unwrap(),
                version: v(version),
                build: None,
                channel: Channel::stable(),
                secure_version: None,
                groups: Vec::new(),
                refused: Vec::new(),
            }
        }
        fn facts(&self) -> DeviceFacts<'_> {
            DeviceFacts {
                device_id: &self.id,
                current_version: &self.version,
                build_number: self.build,
                channel: &self.channel,
                secure_version: self.secure_version,
                groups: &self.groups,
                refused: &self.refused,
            }
        }
    }

    fn offered(candidates: &[Candidate], device: &Device) -> Option<i64> {
        select_offer(candidates, &device.facts()).map(|c| c.firmware_id)
    }

    #[test]
    fn the_highest_newer_version_is_offered() {
        let catalogue = [stable(1, "1.0.0"), stable(2, "1.2.0"), stable(3, "1.1.0")];
        assert_eq!(offered(&catalogue, &Device::running("1.0.0")), Some(2));
    }

    #[test]
    fn nothing_is_offered_to_a_device_that_is_up_to_date() {
        let catalogue = [stable(1, "1.0.0"), stable(2, "1.2.0")];
        assert_eq!(offered(&catalogue, &Device::running("1.2.0")), None);
        assert_eq!(offered(&catalogue, &Device::running("2.0.0")), None);
    }

    #[test]
    fn inactive_firmware_is_never_offered() {
        let mut retired = stable(2, "1.2.0");
        retired.is_active = false;
        let catalogue = [stable(1, "1.1.0"), retired];
        assert_eq!(offered(&catalogue, &Device::running("1.0.0")), Some(1));
    }

    #[test]
    fn a_higher_build_of_the_same_version_is_offered() {
        let mut rebuilt = stable(2, "1.0.0");
        rebuilt.build_number = Some(4);
        let mut device = Device::running("1.0.0");
        device.build = Some(3);
        assert_eq!(offered(&[rebuilt.clone()], &device), Some(2));
        device.build = Some(4);
        assert_eq!(offered(&[rebuilt.clone()], &device), None);
        device.build = None;
        assert_eq!(offered(&[rebuilt], &device), None, "no build number, no tie-break");
    }

    #[test]
    fn build_number_breaks_ties_between_candidates() {
        let mut build_3 = stable(1, "1.1.0");
        build_3.build_number = Some(3);
        let mut build_7 = stable(2, "1.1.0");
        build_7.build_number = Some(7);
        assert_eq!(offered(&[build_7, build_3], &Device::running("1.0.0")), Some(2));
    }

    #[test]
    fn min_version_keeps_old_devices_on_a_stepping_stone() {
        let stepping_stone = stable(1, "1.5.0");
        let mut needs_1_5 = stable(2, "2.0.0");
        needs_1_5.min_version = Some(v("1.5.0"));
        let catalogue = [stepping_stone, needs_1_5];
        assert_eq!(offered(&catalogue, &Device::running("1.0.0")), Some(1));
        assert_eq!(offered(&catalogue, &Device::running("1.5.0")), Some(2));
    }

    #[test]
    fn builds_not_marked_stable_reach_only_other_channels() {
        let mut beta = stable(2, "1.2.0-beta.1");
        beta.is_stable = false;
        let catalogue = [stable(1, "1.1.0"), beta];
        assert_eq!(offered(&catalogue, &Device::running("1.0.0")), Some(1));
        let mut tester = Device::running("1.0.0");
        tester.channel = Channel::parse("beta").unwrap();
        assert_eq!(offered(&catalogue, &tester), Some(2));
    }

    #[test]
    fn a_zero_percent_rollout_reaches_nobody_and_a_full_one_everybody() {
        let mut held = stable(1, "1.1.0");
        held.rollout = Percent::parse(0).unwrap();
        assert_eq!(offered(&[held], &Device::running("1.0.0")), None);
        assert_eq!(offered(&[stable(1, "1.1.0")], &Device::running("1.0.0")), Some(1));
    }

    #[test]
    fn a_device_outside_a_rollout_gets_the_best_firmware_it_is_in() {
        let device = Device::running("1.0.0");
        let mut partial = stable(2, "1.2.0");
        partial.rollout = Percent::parse(50).unwrap();
        let inside = in_rollout(&device.id, 2, partial.rollout);
        let expected = if inside { Some(2) } else { Some(1) };
        assert_eq!(offered(&[stable(1, "1.1.0"), partial], &device), expected);
    }

    #[test]
    fn an_image_below_the_device_anti_rollback_counter_is_never_offered() {
        let with_secure = |id, version, secure| {
            let mut candidate = stable(id, version);
            candidate.secure_version = Some(secure);
            candidate
        };
        // 1.2.0 dropped the counter back to 1 (a rebuilt branch): a device at 2 must skip it.
        let catalogue = [with_secure(1, "1.1.0", 2), with_secure(2, "1.2.0", 1)];
        let mut device = Device::running("1.0.0");
        device.secure_version = Some(2);
        assert_eq!(offered(&catalogue, &device), Some(1));
        device.secure_version = Some(3);
        assert_eq!(
            offered(&catalogue, &device),
            None,
            "every image is below the device's counter"
        );
        device.secure_version = None;
        assert_eq!(
            offered(&catalogue, &device),
            Some(2),
            "an unknown counter does not filter"
        );
        let mut raw = stable(3, "1.3.0");
        raw.secure_version = None;
        device.secure_version = Some(3);
        assert_eq!(offered(&[raw], &device), Some(3), "a raw image has no counter");
    }

    fn arb_device_id() -> impl Strategy<Value = DeviceId> {
        "[a-zA-Z0-9:_-]{1,40}".prop_map(|s| DeviceId::parse(&s).unwrap())
    }

    proptest! {
        #[test]
        fn the_same_device_always_lands_in_the_same_bucket(id in arb_device_id(), fw in any::<i64>()) {
            prop_assert_eq!(rollout_bucket(&id, fw), rollout_bucket(&id, fw));
            prop_assert!(rollout_bucket(&id, fw) < 10_000);
        }

        #[test]
        fn raising_a_rollout_never_drops_a_device(id in arb_device_id(), fw in 1i64..1000, a in 0i64..=100, b in 0i64..=100) {
            let (low, high) = (Percent::parse(a.min(b)).unwrap(), Percent::parse(a.max(b)).unwrap());
            if in_rollout(&id, fw, low) {
                prop_assert!(in_rollout(&id, fw, high));
            }
        }

        #[test]
        fn no_offer_is_below_the_device_counter(
            images in proptest::collection::vec((0u64..6, proptest::option::of(0u32..5)), 0..8),
            counter in proptest::option::of(0u32..5),
            id in arb_device_id(),
        ) {
            let catalogue: Vec<Candidate> = images.iter().enumerate().map(|(i, (minor, secure))| {
                let mut candidate = stable(i as i64 + 1, &format!("1.{minor}.0"));
                candidate.secure_version = *secure;
                candidate
            }).collect();
            let (current, channel) = (v("1.0.0"), Channel::stable());
            let device = DeviceFacts { device_id: &id, current_version: &current, build_number: None, channel: &channel, secure_version: counter, groups: &[], refused: &[] };
            if let (Some(chosen), Some(counter)) = (select_offer(&catalogue, &device), counter) {
                prop_assert!(chosen.secure_version.is_none_or(|image| image >= counter));
            }
        }

        #[test]
        fn the_offer_is_deterministic_and_eligible(
            versions in proptest::collection::vec((0u64..4, 0u64..4, proptest::option::of(0i64..5), 0i64..=100, any::<bool>()), 0..8),
            running in (0u64..4, 0u64..4),
            id in arb_device_id(),
        ) {
            let catalogue: Vec<Candidate> = versions.iter().enumerate().map(|(i, (minor, patch, build, pct, is_stable))| Candidate {
                firmware_id: i as i64 + 1,
                version: v(&format!("1.{minor}.{patch}")),
                build_number: *build,
                min_version: None,
                is_stable: *is_stable,
                is_active: true,
                rollout: Percent::parse(*pct).unwrap(),
                secure_version: None,
                recalled: false,
                target_groups: Vec::new(),
                gate: None,
            }).collect();
            let current = v(&format!("1.{}.{}", running.0, running.1));
            let channel = Channel::stable();
            let device = DeviceFacts { device_id: &id, current_version: &current, build_number: None, channel: &channel, secure_version: None, groups: &[], refused: &[] };
            let first = select_offer(&catalogue, &device).map(|c| c.firmware_id);
            prop_assert_eq!(first, select_offer(&catalogue, &device).map(|c| c.firmware_id));
            if let Some(chosen) = select_offer(&catalogue, &device) {
                prop_assert!(chosen.version > current);
                prop_assert!(chosen.is_stable);
                for other in catalogue.iter().filter(|c| is_eligible(c, &device)) {
                    prop_assert!(other.version <= chosen.version);
                }
            } else {
                prop_assert!(catalogue.iter().all(|c| !is_eligible(c, &device)));
            }
        }
    }

    #[test]
    fn buckets_spread_evenly_over_many_devices() {
        const DEVICES: usize = 20_000;
        let mut deciles = [0usize; 10];
        for n in 0..DEVICES {
            let id = DeviceId::parse(&format!("tab5-{n:06}")).unwrap();
            deciles[usize::from(rollout_bucket(&id, 42) / 1000)] += 1;
        }
        let expected = DEVICES / 10;
        for (decile, count) in deciles.iter().enumerate() {
            let off = count.abs_diff(expected) as f64 / expected as f64;
            assert!(
                off < 0.06,
                "decile {decile} holds {count} devices, expected about {expected}"
            );
        }
    }

    #[test]
    fn a_ten_percent_rollout_reaches_about_ten_percent() {
        let ten = Percent::parse(10).unwrap();
        let reached = (0..10_000)
            .filter(|n| in_rollout(&DeviceId::parse(&format!("dev-{n}")).unwrap(), 7, ten))
            .count();
        assert!((900..=1100).contains(&reached), "reached {reached} of 10000");
    }
}

#[cfg(test)]
mod pinned {
    use super::*;

    /// Pins the bucket function: changing it would reshuffle every rollout
    /// cohort in the field, so it must not change by accident.
    #[test]
    fn buckets_are_stable_across_releases() {
        for (device, firmware_id, bucket) in [
            ("tab5-0001", 1, 2233),
            ("tab5-0001", 2, 9438),
            ("AA:BB:CC:DD:EE:FF", 12, 2532),
        ] {
            assert_eq!(
                rollout_bucket(&DeviceId::parse(device).unwrap(), firmware_id),
                bucket,
                "{device} {firmware_id}"
            );
        }
    }
}

#[cfg(test)]
mod fleet {
    use super::*;
    use crate::rollout::Stages;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn firmware(id: i64, version: &str) -> Candidate {
        Candidate {
            firmware_id: id,
            version: v(version),
            build_number: None,
            min_version: None,
            is_stable: true,
            is_active: true,
            rollout: Percent::FULL,
            secure_version: None,
            recalled: false,
            target_groups: Vec::new(),
            gate: None,
        }
    }

    fn gate(rollout_id: i64, state: RolloutState, stage: usize) -> Gate {
        Gate {
            rollout_id,
            state,
            stages: Stages::default_stages().as_slice().to_vec(),
            stage,
            cohort_key: 1,
            arm: None,
            groups: Vec::new(),
        }
    }

    struct Facts {
        id: DeviceId,
        version: Version,
        channel: Channel,
        secure_version: Option<u32>,
        groups: Vec<i64>,
        refused: Vec<i64>,
    }

    impl Facts {
        fn new(id: &str, version: &str) -> Self {
            Facts {
                id: DeviceId::parse(id).unwrap(),
                version: v(version),
                channel: Channel::stable(),
                secure_version: None,
                groups: Vec::new(),
                refused: Vec::new(),
            }
        }
        fn get(&self) -> DeviceFacts<'_> {
            DeviceFacts {
                device_id: &self.id,
                current_version: &self.version,
                build_number: None,
                channel: &self.channel,
                secure_version: self.secure_version,
                groups: &self.groups,
                refused: &self.refused,
            }
        }
    }

    fn chosen(candidates: &[Candidate], device: &Facts, pin: Option<i64>) -> Option<(i64, OfferKind, bool)> {
        let refs: Vec<&Candidate> = candidates.iter().collect();
        choose(&refs, &device.get(), pin).map(|c| (c.candidate.firmware_id, c.kind, c.downgrade))
    }

    /// Devices by the stage they join a rollout keyed by firmware 1 in.
    fn devices_by_stage() -> Vec<Vec<Facts>> {
        let stages = Stages::default_stages();
        let mut by_stage: Vec<Vec<Facts>> = (0..4).map(|_| Vec::new()).collect();
        for n in 0..2000 {
            let facts = Facts::new(&format!("dev-{n}"), "1.0.0");
            let stage = stage_of(cohort_bucket(&facts.id, 1), stages.as_slice()).unwrap();
            by_stage[stage].push(facts);
        }
        by_stage
    }

    #[test]
    fn a_running_rollout_reaches_the_stages_up_to_the_current_one() {
        let by_stage = devices_by_stage();
        for current in 0..4 {
            let mut release = firmware(1, "1.1.0");
            release.gate = Some(gate(9, RolloutState::Running, current));
            for (stage, devices) in by_stage.iter().enumerate() {
                for device in devices.iter().take(5) {
                    let offered = chosen(std::slice::from_ref(&release), device, None).is_some();
                    assert_eq!(offered, stage <= current, "stage {stage} while at {current}");
                }
            }
        }
    }

    #[test]
    fn paused_halted_and_aborted_rollouts_offer_nothing_and_a_completed_one_everything() {
        let by_stage = devices_by_stage();
        let first = &by_stage[0][0];
        let last = &by_stage[3][0];
        for (state, offers_first, offers_last) in [
            (RolloutState::Paused, false, false),
            (RolloutState::Halted, false, false),
            (RolloutState::Aborted, false, false),
            (RolloutState::Completed, true, true),
        ] {
            let mut release = firmware(1, "1.1.0");
            release.gate = Some(gate(9, state, 0));
            assert_eq!(
                chosen(std::slice::from_ref(&release), first, None).is_some(),
                offers_first,
                "{state}"
            );
            assert_eq!(
                chosen(std::slice::from_ref(&release), last, None).is_some(),
                offers_last,
                "{state}"
            );
        }
    }

    #[test]
    fn an_ab_rollout_offers_each_device_exactly_one_arm() {
        let mut a = firmware(1, "1.1.0");
        let mut b = firmware(2, "1.2.0");
        let half = Percent::parse(50).unwrap();
        a.gate = Some(Gate {
            arm: Some((Arm::A, half)),
            ..gate(9, RolloutState::Running, 3)
        });
        b.gate = Some(Gate {
            arm: Some((Arm::B, half)),
            ..gate(9, RolloutState::Running, 3)
        });
        let (mut got_a, mut got_b) = (0, 0);
        for n in 0..1000 {
            let device = Facts::new(&format!("dev-{n}"), "1.0.0");
            match chosen(&[a.clone(), b.clone()], &device, None) {
                Some((1, ..)) => got_a += 1,
                Some((2, ..)) => got_b += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!((400..=600).contains(&got_b), "a {got_a}, b {got_b}");
    }

    #[test]
    fn group_targets_admit_only_members() {
        let mut for_beta = firmware(1, "1.1.0");
        for_beta.target_groups = vec![7];
        let mut device = Facts::new("dev-1", "1.0.0");
        assert_eq!(chosen(std::slice::from_ref(&for_beta), &device, None), None);
        device.groups = vec![3, 7];
        assert_eq!(
            chosen(std::slice::from_ref(&for_beta), &device, None),
            Some((1, OfferKind::Update, false))
        );

        let mut release = firmware(2, "1.2.0");
        release.gate = Some(Gate {
            groups: vec![8],
            ..gate(9, RolloutState::Completed, 3)
        });
        assert_eq!(
            chosen(&[for_beta.clone(), release.clone()], &device, None),
            Some((1, OfferKind::Update, false)),
            "the rollout targets group 8 only"
        );
        device.groups.push(8);
        assert_eq!(
            chosen(&[for_beta, release], &device, None),
            Some((2, OfferKind::Update, false))
        );
    }

    #[test]
    fn a_pinned_device_gets_its_pin_and_nothing_else() {
        let catalogue = [firmware(1, "1.0.0"), firmware(2, "1.1.0"), firmware(3, "1.2.0")];
        let device = Facts::new("dev-1", "1.2.0");
        assert_eq!(chosen(&catalogue, &device, Some(1)), Some((1, OfferKind::Pinned, true)));
        let device = Facts::new("dev-1", "1.0.0");
        assert_eq!(chosen(&catalogue, &device, Some(1)), None, "it runs its pin");
        assert_eq!(
            chosen(&catalogue, &device, Some(2)),
            Some((2, OfferKind::Pinned, false))
        );
        assert_eq!(
            chosen(&catalogue, &device, Some(99)),
            None,
            "an unknown pin offers nothing"
        );
    }

    #[test]
    fn a_pin_below_the_device_counter_is_not_offered() {
        let mut old = firmware(1, "1.0.0");
        old.secure_version = Some(1);
        let mut device = Facts::new("dev-1", "1.2.0");
        device.secure_version = Some(2);
        assert_eq!(chosen(std::slice::from_ref(&old), &device, Some(1)), None);
        device.secure_version = Some(1);
        assert_eq!(chosen(&[old], &device, Some(1)), Some((1, OfferKind::Pinned, true)));
    }

    #[test]
    fn a_recalled_release_is_not_offered_and_its_devices_go_back_to_the_previous_good_one() {
        let mut bad = firmware(3, "1.2.0");
        bad.recalled = true;
        let mut broken_earlier = firmware(2, "1.1.0");
        broken_earlier.recalled = true;
        let catalogue = [firmware(1, "1.0.0"), broken_earlier, bad];
        assert_eq!(chosen(&catalogue, &Facts::new("dev-1", "1.0.0"), None), None);
        assert_eq!(
            chosen(&catalogue, &Facts::new("dev-2", "1.2.0"), None),
            Some((1, OfferKind::Recall, true)),
            "the previous good version skips recalled ones"
        );
        let mut fixed = catalogue.to_vec();
        fixed.push(firmware(4, "1.2.1"));
        assert_eq!(
            chosen(&fixed, &Facts::new("dev-2", "1.2.0"), None),
            Some((4, OfferKind::Update, false)),
            "a fix forward wins over going back"
        );
    }

    #[test]
    fn a_recall_never_goes_below_the_device_counter() {
        let mut previous = firmware(1, "1.0.0");
        previous.secure_version = Some(1);
        let mut bad = firmware(2, "1.1.0");
        bad.secure_version = Some(2);
        bad.recalled = true;
        let mut device = Facts::new("dev-1", "1.1.0");
        device.secure_version = Some(2);
        assert_eq!(chosen(&[previous, bad], &device, None), None);
    }

    #[test]
    fn firmware_a_device_rolled_back_from_is_not_offered_to_it_again() {
        let catalogue = [firmware(1, "1.1.0"), firmware(2, "1.2.0")];
        let mut device = Facts::new("dev-1", "1.0.0");
        device.refused = vec![2];
        assert_eq!(chosen(&catalogue, &device, None), Some((1, OfferKind::Update, false)));
    }
}
