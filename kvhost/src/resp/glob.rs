//! Redis's glob-style pattern matching (`stringmatchlen` in util.c) for KEYS and SCAN MATCH:
//! `*`, `?`, `[abc]`, `[^a-z]`, `\x` escapes; binary-safe; case-sensitive.

/// Whether `s` matches `pat`.
pub fn matches(pat: &[u8], s: &[u8]) -> bool {
    // Iterative with one backtrack point for the last `*`, as Redis 7 bounds its recursion.
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    while p + 1 < pat.len() && pat[p + 1] == b'*' {
                        p += 1;
                    }
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' if i < s.len() => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' if i < s.len() => {
                    if let Some((ok, next)) = class(pat, p, s[i]) {
                        if ok {
                            p = next;
                            i += 1;
                            continue;
                        }
                    }
                }
                b'\\' if p + 1 < pat.len() && i < s.len() && pat[p + 1] == s[i] => {
                    p += 2;
                    i += 1;
                    continue;
                }
                b'\\' if p + 1 < pat.len() => {}
                c if i < s.len() && c == s[i] && c != b'?' && c != b'[' && c != b'\\' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                // A trailing lone backslash matches a literal backslash.
                b'\\' if p + 1 == pat.len() && i < s.len() && s[i] == b'\\' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        } else if i == s.len() {
            return true;
        }
        // Mismatch: let the last star take one more byte.
        match star {
            Some((sp, si)) if si < s.len() => {
                star = Some((sp, si + 1));
                p = sp + 1;
                i = si + 1;
            }
            _ => return false,
        }
    }
}

/// A `[...]` class at `pat[p]` against byte `c`: whether it matches, and where the pattern
/// goes on. An unterminated class runs to the end of the pattern (as Redis).
fn class(pat: &[u8], p: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = p + 1;
    let not = pat.get(j) == Some(&b'^');
    if not {
        j += 1;
    }
    let mut hit = false;
    loop {
        match pat.get(j) {
            None => {
                // Redis steps back so the pattern ends here.
                break;
            }
            Some(b']') => {
                j += 1;
                break;
            }
            Some(b'\\') if j + 1 < pat.len() => {
                if pat[j + 1] == c {
                    hit = true;
                }
                j += 2;
            }
            Some(&a) if pat.get(j + 1) == Some(&b'-') && j + 2 < pat.len() => {
                let b = pat[j + 2];
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                if (lo..=hi).contains(&c) {
                    hit = true;
                }
                j += 3;
            }
            Some(&a) => {
                if a == c {
                    hit = true;
                }
                j += 1;
            }
        }
    }
    Some((hit != not, j))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_glob_cases() {
        let m = |p: &str, s: &str| matches(p.as_bytes(), s.as_bytes());
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"));
        assert!(m("user:*:name", "user:42:name"));
        assert!(!m("user:*:name", "user:42:mail"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!m("*a*b*c*", "xxaxxcxxbxx"));
        assert!(m("k?", "k\u{1}"));
        assert!(!m("abc", "abcd"));
        assert!(m("abc*", "abc"));
    }
}
