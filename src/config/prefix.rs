//! A gateway route's path prefix: which request paths it takes, and how a room maps them. One type for the
//! route table (matching), the relay (the prefix replaced by the upstream's base, and put back into `Location`),
//! the resource gateways (the path below it names the script; SCRIPT_NAME is mounted under it) and the FTP
//! gateway (the path below it maps under the route's directory).

use std::fmt;

/// A path prefix that starts with `/` and does not end with one, or `/` itself (every path). Matched on segment
/// boundaries: `/app` takes `/app`, `/app/` and `/app/x`, never `/apple`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// `/`: every path.
    pub fn root() -> Prefix {
        Prefix("/".to_string())
    }

    /// A route's `path` as configured: it must start with `/`; trailing slashes are dropped (`/api/` is `/api`,
    /// `//` is `/`).
    pub fn parse(path: &str) -> Result<Prefix, String> {
        if !path.starts_with('/') {
            return Err(format!("path {path:?} must start with /"));
        }
        let trimmed = path.trim_end_matches('/');
        Ok(if trimmed.is_empty() { Prefix::root() } else { Prefix(trimmed.to_string()) })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// What follows the prefix in `path`: `""` for the prefix itself, else a rest starting with `/` (the root
    /// prefix takes every path whole). None when `path` is not under the prefix.
    #[inline]
    pub fn rest<'p>(&self, path: &'p str) -> Option<&'p str> {
        if self.is_root() {
            return Some(path);
        }
        path.strip_prefix(self.0.as_str()).filter(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    pub fn matches(&self, path: &str) -> bool {
        self.rest(path).is_some()
    }

    /// The path below the prefix, `/` at least (`/app/x` -> `/x`, `/app` -> `/`). None when `path` is not under it.
    pub fn below<'p>(&self, path: &'p str) -> Option<&'p str> {
        self.rest(path).map(|rest| if rest.is_empty() { "/" } else { rest })
    }

    /// Where names below the prefix are mounted: `""` for the root, else the prefix (`/app`), so that
    /// `mount_point() + below(path)` is the path again.
    pub fn mount_point(&self) -> &str {
        if self.is_root() { "" } else { &self.0 }
    }

    /// `name` (a path below the prefix, such as a script's) as the client sees it: `/x.cgi` -> `/app/x.cgi`.
    pub fn mount(&self, name: &str) -> String {
        format!("{}{name}", self.mount_point())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(Prefix::parse("/api/").unwrap().as_str(), "/api");
        assert_eq!(Prefix::parse("//").unwrap(), Prefix::root());
        assert_eq!(Prefix::parse("/").unwrap(), Prefix::root());
        assert_eq!(Prefix::parse("api").unwrap_err(), "path \"api\" must start with /");
        assert!(Prefix::parse("").is_err());
    }

    #[test]
    fn segment_boundaries() {
        let p = Prefix::parse("/app").unwrap();
        assert_eq!(p.rest("/app"), Some(""));
        assert_eq!(p.rest("/app/"), Some("/"));
        assert_eq!(p.rest("/app/x/y"), Some("/x/y"));
        assert_eq!(p.rest("/apple"), None);
        assert_eq!(p.rest("/ap"), None);
        assert_eq!(p.rest("/other/app"), None);
        assert_eq!(p.below("/app"), Some("/"));
        assert_eq!(p.below("/app/x"), Some("/x"));
        assert!(p.matches("/app/") && !p.matches("/apple"));
        let root = Prefix::root();
        assert_eq!((root.rest("/x"), root.rest("*"), root.below("/")), (Some("/x"), Some("*"), Some("/")));
    }

    #[test]
    fn mounting() {
        let p = Prefix::parse("/cgi-bin").unwrap();
        assert_eq!((p.mount("/env.py"), p.mount_point()), ("/cgi-bin/env.py".to_string(), "/cgi-bin"));
        let root = Prefix::root();
        assert_eq!((root.mount("/env.py"), root.mount_point()), ("/env.py".to_string(), ""));
        assert_eq!(format!("{p}"), "/cgi-bin");
    }
}
