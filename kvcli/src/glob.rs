//! Byte-string glob matching for `kvcli keys`: `*` any run, `?` one byte, `[abc]`/`[a-z]`/
//! `[!a]` a set, `\x` a literal `x`.

/// Whether `key` matches `pat`.
pub fn matches(pat: &[u8], key: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking (linear in practice).
    let (mut p, mut k) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, k));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    k += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(&pat[p..], key[k]) {
                        if ok {
                            p += next;
                            k += 1;
                            continue;
                        }
                    } else if key[k] == b'[' {
                        p += 1;
                        k += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pat.len() && pat[p + 1] == key[k] => {
                    p += 2;
                    k += 1;
                    continue;
                }
                b'\\' if p + 1 < pat.len() => {}
                c if c == key[k] => {
                    p += 1;
                    k += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sk)) => {
                p = sp + 1;
                k = sk + 1;
                star = Some((sp, sk + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Match `c` against the class at the start of `pat` (`[...]`): (matched, class length), or
/// `None` if the class is not closed.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = pat.get(1) == Some(&b'!') || pat.get(1) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < pat.len() {
        if pat[i] == b']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        let lo = pat[i];
        if i + 2 < pat.len() && pat[i + 1] == b'-' && pat[i + 2] != b']' {
            if (lo..=pat[i + 2]).contains(&c) {
                hit = true;
            }
            i += 3;
        } else {
            if lo == c {
                hit = true;
            }
            i += 1;
        }
    }
    None
}

/// The literal bytes a pattern starts with (to narrow the scan).
pub fn literal_prefix(pat: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pat.len() {
        match pat[i] {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < pat.len() => {
                out.push(pat[i + 1]);
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches(b"*", b""));
        assert!(matches(b"user:*", b"user:42"));
        assert!(!matches(b"user:*", b"admin:1"));
        assert!(matches(b"a?c", b"abc"));
        assert!(!matches(b"a?c", b"ac"));
        assert!(matches(b"*:1[0-9]", b"x:15"));
        assert!(!matches(b"*:1[!0-9]", b"x:15"));
        assert!(matches(b"a\\*b", b"a*b"));
        assert!(!matches(b"a\\*b", b"axb"));
        assert!(matches(b"*a*b*", b"xxaYYbZZ"));
        assert!(!matches(b"*a*b", b"xxaYYbZZ"));
        assert!(matches(b"k\xff*", b"k\xff\x00"));
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"a\\*b*"), b"a*b");
    }
}
