//! Groups of proxy users from an Apache `AuthGroupFile` (mod_authz_groupfile): `GROUP: USER USER ...` per line,
//! `#` comments and blank lines skipped. A group may take several lines (Apache reads every line naming it), so
//! its members are the union of them. Rules of the forward proxy's policy name groups (`groups = [...]`).
//! Does not: nest groups, or read the file again when it changes (a reload of the configuration does).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::htpasswd::LoadError;

/// The groups of one file.
#[derive(Debug, Default, Clone)]
pub struct Groups {
    members: HashMap<String, HashSet<String>>,
}

impl Groups {
    /// Reads and validates a groups file.
    pub fn load(path: &Path) -> Result<Groups, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError {
            path: path.to_owned(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Groups::parse(&bytes).map_err(|mut e| {
            e.path = path.to_owned();
            e
        })
    }

    /// Parses groups-file bytes (the errors carry no path).
    pub fn parse(bytes: &[u8]) -> Result<Groups, LoadError> {
        let mut members: HashMap<String, HashSet<String>> = HashMap::new();
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let fail = |reason: String| LoadError { path: PathBuf::new(), line, reason };
            let text = std::str::from_utf8(raw).map_err(|_| fail("not UTF-8".into()))?;
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let Some((name, users)) = text.split_once(':') else {
                return Err(fail("expected GROUP: USER USER ...".into()));
            };
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(fail(format!("group name {name:?}: one word is expected before the colon")));
            }
            if name.chars().any(char::is_control) || users.chars().any(|c| c.is_control() && c != '\t') {
                return Err(fail("control character".into()));
            }
            members.entry(name.to_owned()).or_default().extend(users.split_whitespace().map(str::to_owned));
        }
        Ok(Groups { members })
    }

    pub fn contains(&self, group: &str) -> bool {
        self.members.contains_key(group)
    }

    /// The members of `group` (none for an unknown group).
    pub fn members(&self, group: &str) -> impl Iterator<Item = &str> {
        self.members.get(group).into_iter().flatten().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_group_files() {
        let g = Groups::parse(b"# staff\nstaff: ann bob\n\nadmins:carl\nstaff: dan\r\nempty:\n").unwrap();
        let mut staff: Vec<&str> = g.members("staff").collect();
        staff.sort();
        assert_eq!(staff, ["ann", "bob", "dan"], "a group on two lines has both lines' members");
        assert_eq!(g.members("admins").collect::<Vec<_>>(), ["carl"]);
        assert!(g.contains("empty") && g.members("empty").next().is_none());
        assert!(!g.contains("nobody"));
        for (bad, line) in [(&b"ok: a\nno colon here\n"[..], 2), (b"two words: a\n", 1), (b": a\n", 1), (b"\xff: a", 1)]
        {
            let e = Groups::parse(bad).unwrap_err();
            assert_eq!(e.line, line, "{e}");
        }
    }
}
