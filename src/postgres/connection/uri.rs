//! The parts of a `postgres://` URI, percent-decoded, and the forms refused
//! because URL parsing would silently change what they name.

use url::Url;

use crate::options::OptionError;

/// The parts of a `postgres://` URI, percent-decoded.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct UriParts {
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) database: Option<String>,
}

/// Reads the `location` option: `postgres://`, `postgresql://` or `postgres+bin://`.
pub(super) fn parse_uri(location: &str) -> Result<UriParts, OptionError> {
    let bad = |why: &str| {
        OptionError::Conflict(format!(
            "option `location` is not a valid PostgreSQL URI ({why}); expected postgres://[user[:password]@]host[:port][/database]"
        ))
    };
    let url = Url::parse(location).map_err(|e| bad(&e.to_string()))?;
    if !["postgres", "postgresql", "postgres+bin"].contains(&url.scheme()) {
        return Err(bad(&format!("the scheme is {:?}", url.scheme())));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "query parameters are not read; use the options ssl_mode, connect_timeout, ... instead",
        ));
    }
    if has_dot_segment(location) {
        return Err(bad(
            "a path part `.` or `..` would be dropped, leaving another database or none; give such a name with the option `database`",
        ));
    }
    let decode = |s: &str| -> Result<String, OptionError> {
        percent_decode(s).ok_or_else(|| bad("a percent-encoded part is not valid UTF-8"))
    };
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            Some(decode(h)?)
        }
        _ => None,
    };
    let user = if url.username().is_empty() {
        None
    } else {
        Some(decode(url.username())?)
    };
    let password = url.password().map(decode).transpose()?;
    let path = url.path();
    let path = path.strip_prefix('/').unwrap_or(path);
    let database = if path.is_empty() {
        None
    } else {
        Some(decode(path)?)
    };
    if url.port() == Some(0) {
        return Err(bad("port 0 is not a port a server listens on"));
    }
    Ok(UriParts {
        host,
        port: url.port(),
        user,
        password,
        database,
    })
}

/// Whether a URI's path has a `.` or `..` segment (percent-encoded or not),
/// which URL parsing silently resolves away: `postgres://h/..` would name no database.
fn has_dot_segment(location: &str) -> bool {
    // What the URL parser reads: outer spaces and controls trimmed, tabs and line breaks dropped.
    let cleaned: String = location
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let Some((_, rest)) = cleaned.split_once(':') else {
        return false;
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => authority_and_path
            .find('/')
            .map_or("", |i| &authority_and_path[i..]),
        None => rest,
    };
    // A path that does not start with `/` is opaque and kept as written.
    path.starts_with('/')
        && path.split('/').any(|segment| {
            matches!(
                segment.to_ascii_lowercase().as_str(),
                "." | ".." | "%2e" | ".%2e" | "%2e." | "%2e%2e"
            )
        })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}
