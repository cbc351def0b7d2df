//! Node names for MagicDNS: turning a reported hostname into a DNS label, validating
//! admin-chosen names and domains, and making names unique.

/// The longest DNS label.
pub const MAX_LABEL_LEN: usize = 63;

/// Turns any hostname into a lowercase DNS label (`Joe's Mac mini` → `joes-mac-mini`).
/// A hostname with nothing usable becomes `node`.
pub fn sanitize_hostname(hostname: &str) -> String {
    let first = hostname.split('.').next().unwrap_or_default();
    let mut out = String::with_capacity(first.len());
    for c in first.chars() {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            'A'..='Z' => out.push(c.to_ascii_lowercase()),
            ' ' | '-' | '_' if !out.is_empty() && !out.ends_with('-') => out.push('-'),
            _ => {}
        }
    }
    out.truncate(MAX_LABEL_LEN);
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "node".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Whether `s` is a valid lowercase DNS label.
pub fn is_valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a valid domain made of DNS labels.
pub fn is_valid_domain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_valid_label)
}

/// The first of `base`, `base-1`, `base-2`, ... for which `taken` is false.
pub fn unique_name(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_string();
    }
    (1u64..)
        .map(|i| {
            let suffix = format!("-{i}");
            let mut b = base.to_string();
            b.truncate(MAX_LABEL_LEN - suffix.len());
            format!("{}{suffix}", b.trim_end_matches('-'))
        })
        .find(|n| !taken(n))
        .expect("an unbounded sequence has a free name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_like_tailscale() {
        assert_eq!(sanitize_hostname("Joe's Mac mini"), "joes-mac-mini");
        assert_eq!(sanitize_hostname("host.example.com"), "host");
        assert_eq!(sanitize_hostname("日本"), "node");
        assert_eq!(sanitize_hostname("--a__b--"), "a-b");
        assert!(is_valid_label(&sanitize_hostname(&"x".repeat(100))));
    }

    #[test]
    fn unique_names_get_suffixes() {
        let taken = ["node", "node-1"];
        assert_eq!(unique_name("node", |n| taken.contains(&n)), "node-2");
        assert_eq!(unique_name("free", |n| taken.contains(&n)), "free");
    }

    #[test]
    fn validates_labels_and_domains() {
        assert!(is_valid_label("abc-1"));
        assert!(!is_valid_label("-abc"));
        assert!(!is_valid_label("ABC"));
        assert!(is_valid_domain("tailnet.internal"));
        assert!(!is_valid_domain("bad..domain"));
    }
}
