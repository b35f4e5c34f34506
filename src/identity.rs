//! The image's identifiers and times. By default: random filesystem UUID, directory hash seed,
//! disk and partition GUIDs, and the current time. With SOURCE_DATE_EPOCH: the superblock times
//! are that epoch, file times are clamped to it, and every identifier is derived from a digest of
//! the tree (as it will be stored) and the options, so the same tree gives the same bytes.
//! `--uuid`, `--disk-guid` and `--part-guid` override either.

use anyhow::{bail, Result};
use uuid::Uuid;

/// The identifiers chosen.
#[derive(Debug, Clone)]
pub struct Ids {
    pub fs_uuid: Uuid,
    pub hash_seed: Uuid,
    pub disk: Uuid,
    pub partition: Uuid,
    /// `--efi`: the EFI system partition's GUID and its FAT volume serial number.
    pub esp_partition: Uuid,
    pub esp_volume_id: u32,
}

impl Ids {
    pub fn random() -> Ids {
        Ids {
            fs_uuid: Uuid::new_v4(),
            hash_seed: Uuid::new_v4(),
            disk: Uuid::new_v4(),
            partition: Uuid::new_v4(),
            esp_partition: Uuid::new_v4(),
            esp_volume_id: u32::from_le_bytes(
                Uuid::new_v4().as_bytes()[..4].try_into().expect("4 bytes"),
            ),
        }
    }

    /// Derived from `digest` (of the tree and options): RFC 4122 version 4 layout, each from its
    /// own keyed hash.
    pub fn derived(digest: &[u8; 32]) -> Ids {
        let one = |what: &str| {
            let key = blake3::derive_key(&format!("linuxdisk-mk 1 {what}"), digest);
            uuid::Builder::from_random_bytes(key[..16].try_into().expect("16 bytes")).into_uuid()
        };
        Ids {
            fs_uuid: one("filesystem uuid"),
            hash_seed: one("hash seed"),
            disk: one("disk guid"),
            partition: one("partition guid"),
            esp_partition: one("esp partition guid"),
            esp_volume_id: u32::from_le_bytes(
                one("esp volume id").as_bytes()[..4]
                    .try_into()
                    .expect("4 bytes"),
            ),
        }
    }
}

/// SOURCE_DATE_EPOCH, if set: seconds since the epoch.
pub fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => match v.trim().parse::<i64>() {
            Ok(t) if (0..=u32::MAX as i64).contains(&t) => Ok(Some(t)),
            _ => bail!("SOURCE_DATE_EPOCH={v}: not a number of seconds between 1970 and 2106"),
        },
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => bail!("SOURCE_DATE_EPOCH: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_distinct_and_rfc4122() {
        let a = Ids::derived(&[7; 32]);
        let b = Ids::derived(&[7; 32]);
        let c = Ids::derived(&[8; 32]);
        assert_eq!(a.fs_uuid, b.fs_uuid);
        assert_eq!(a.partition, b.partition);
        assert_ne!(a.fs_uuid, c.fs_uuid);
        let all = [a.fs_uuid, a.hash_seed, a.disk, a.partition, a.esp_partition];
        assert_eq!(a.esp_volume_id, b.esp_volume_id);
        assert_ne!(a.esp_volume_id, c.esp_volume_id);
        for (i, x) in all.iter().enumerate() {
            assert_eq!(x.get_version_num(), 4);
            assert_eq!(x.get_variant(), uuid::Variant::RFC4122);
            assert!(all[i + 1..].iter().all(|y| y != x));
        }
    }
}
