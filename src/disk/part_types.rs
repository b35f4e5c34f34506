//! Partition type GUIDs by name: the Discoverable Partitions Specification's names (and a few
//! classics) that `--part-type` takes, and parsing a name or a GUID.

use uuid::Uuid;

use super::gpt::LINUX_FS_TYPE;

/// Partition type names of the Discoverable Partitions Specification (and a few classics),
/// with their type GUIDs.
pub const PART_TYPES: &[(&str, Uuid)] = &[
    ("linux", LINUX_FS_TYPE),
    (
        "root-x86-64",
        uuid::uuid!("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
    ),
    (
        "root-x86",
        uuid::uuid!("44479540-F297-41B2-9AF7-D131D5F0458A"),
    ),
    (
        "root-arm64",
        uuid::uuid!("B921B045-1DF0-41C3-AF44-4C6F280362E3"),
    ),
    (
        "root-arm",
        uuid::uuid!("69DAD710-2CE4-4E3C-B16C-21A1D49ABED3"),
    ),
    (
        "root-riscv64",
        uuid::uuid!("72EC70A6-CF74-40E6-BD49-4BDA08E8F224"),
    ),
    (
        "usr-x86-64",
        uuid::uuid!("8484680C-9521-48C6-9C11-B0720656F69E"),
    ),
    (
        "usr-x86",
        uuid::uuid!("75250D76-8CC6-458E-BD66-BD47CC81A812"),
    ),
    (
        "usr-arm64",
        uuid::uuid!("B0E01050-EE5F-4390-949A-9101B17104E9"),
    ),
    (
        "usr-arm",
        uuid::uuid!("7D0359A3-02B3-4F0A-865C-654403E70625"),
    ),
    (
        "usr-riscv64",
        uuid::uuid!("BEAEC34B-8442-439B-A40B-984381ED097D"),
    ),
    ("home", uuid::uuid!("933AC7E1-2EB4-4F13-B844-0E14E2AEF915")),
    ("srv", uuid::uuid!("3B8F8425-20E0-4F3B-907F-1A25A76F98E8")),
    ("var", uuid::uuid!("4D21B016-B534-45C2-A9FB-5C16E091FD2D")),
    ("tmp", uuid::uuid!("7EC6F557-3BC5-4ACA-B293-16EF5DF639D1")),
    ("esp", uuid::uuid!("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")),
    (
        "xbootldr",
        uuid::uuid!("BC13C2FF-59E6-4262-A352-B275FD6F7172"),
    ),
    ("swap", uuid::uuid!("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F")),
];

/// `--part-type`: a name from [`PART_TYPES`] or a GUID, not the nil GUID (the type of an
/// unused entry: a partition of that type is no partition at all).
pub fn parse(s: &str) -> Result<Uuid, String> {
    if let Some((_, g)) = PART_TYPES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
        return Ok(*g);
    }
    match Uuid::parse_str(s) {
        Ok(g) if g.is_nil() => Err(format!(
            "'{s}' is the type GUID of an unused GPT entry, not of a partition"
        )),
        Ok(g) => Ok(g),
        Err(_) => {
            let names: Vec<&str> = PART_TYPES.iter().map(|p| p.0).collect();
            Err(format!(
                "'{s}' is neither a GUID nor one of: {}",
                names.join(", ")
            ))
        }
    }
}
