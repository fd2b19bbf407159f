//! The parts of the SMS bridge (Twilio Messaging) built so far: checking Twilio's request
//! signature, counting a text's SMS segments as the carrier will, and writing numbers in
//! E.164. The bridge itself (the inbound webhook, status callbacks, sending, opt-out) is not
//! built yet: the README lists SMS as planned.

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};

use crate::webhook::{constant_time_eq, SignatureError};

/// The header Twilio signs its webhook requests in.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// Twilio's signature of a request: base64(HMAC-SHA1(auth token, the full URL, then every
/// POST parameter sorted by name, each as name then value)).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a request's `X-Twilio-Signature` against `url`, the public URL Twilio was given
/// (behind a proxy the request's own URL differs), and the URL with its port added or
/// removed, as Twilio's own libraries accept (Twilio may sign either form).
pub fn verify(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    given: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let given = given.ok_or(SignatureError::Missing {
        header: SIGNATURE_HEADER,
    })?;
    let matches = url_variants(url)
        .iter()
        .any(|url| constant_time_eq(signature(auth_token, url, params).as_bytes(), given));
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// `url` as given, and with its scheme's default port added (or removed, if it has one).
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let default = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return variants,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (format!("{userinfo}@"), host_port),
        None => (String::new(), authority),
    };
    let other = match host_port.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{scheme}://{userinfo}{host}{tail}")
        }
        _ => format!("{scheme}://{userinfo}{host_port}:{default}{tail}"),
    };
    variants.push(other);
    variants
}

/// How a text goes over SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The GSM 03.38 alphabet, 7 bits a character (its extension characters count twice).
    Gsm7,
    /// UCS-2, 16 bits a code unit: any text with a character outside GSM-7.
    Ucs2,
}

/// A text's SMS segments, as carriers count them: what the agent sees before sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// The encoding the text needs.
    pub encoding: Encoding,
    /// How many messages it goes as (one, or several concatenated).
    pub count: usize,
}

/// GSM 03.38's basic characters.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38's extension characters (an escape, then the character: two septets).
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{000C}";

/// Counts `text`'s segments: GSM-7 takes 160 septets in one message, 153 a part when
/// concatenated (the header takes 7); UCS-2 takes 70 code units, 67 a part. An extension
/// character is never split across parts, nor is a surrogate pair.
pub fn segments(text: &str) -> Segments {
    let gsm = text
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .collect::<Option<Vec<usize>>>();
    match gsm {
        Some(units) => Segments {
            encoding: Encoding::Gsm7,
            count: parts(&units, 160, 153),
        },
        None => {
            let units: Vec<usize> = text.chars().map(char::len_utf16).collect();
            Segments {
                encoding: Encoding::Ucs2,
                count: parts(&units, 70, 67),
            }
        }
    }
}

/// How many parts characters of `units` each take: one part if they fit in `single`, else
/// parts of `multi`, a character never split.
fn parts(units: &[usize], single: usize, multi: usize) -> usize {
    let total: usize = units.iter().sum();
    if total <= single {
        return 1;
    }
    let (mut count, mut used) = (1, 0);
    for unit in units {
        if used + unit > multi {
            count += 1;
            used = 0;
        }
        used += unit;
    }
    count
}

/// A phone number in E.164 (`+` and up to 15 digits, no leading zero), from the forms
/// people and providers write (spaces, dashes, dots, parentheses, `00` for `+`). `None` for
/// what is not one (a short code, a national number without its country code).
pub fn e164(number: &str) -> Option<String> {
    let compact: String = number
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}'))
        .collect();
    let digits = compact
        .strip_prefix('+')
        .or_else(|| compact.strip_prefix("00"))?;
    let valid = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    valid.then(|| format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(caller: &str) -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", caller),
            ("Digits", "1234"),
            ("From", caller),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn twilios_published_vectors() {
        assert_eq!(
            signature("12345", URL, &params("+14158675310")),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
        assert_eq!(
            signature("12345", URL, &params("+14158675309")),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn a_signature_is_checked_with_and_without_the_port_and_refused_when_anything_differs() {
        let good = params("+14158675310");
        let signed = signature("12345", URL, &good);
        assert_eq!(verify("12345", URL, &good, Some(signed.as_bytes())), Ok(()));
        // Twilio signed the URL with its default port; the configured one has none, or the
        // other way round.
        let with_port = signature(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &good,
        );
        assert_eq!(
            verify("12345", URL, &good, Some(with_port.as_bytes())),
            Ok(())
        );
        assert_eq!(
            verify(
                "12345",
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &good,
                Some(signed.as_bytes())
            ),
            Ok(())
        );
        assert!(matches!(
            verify("12345", URL, &good, None),
            Err(SignatureError::Missing { .. })
        ));
        assert_eq!(
            verify("54321", URL, &good, Some(signed.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        let mut altered = good.clone();
        altered[2].1 = "1235".to_owned();
        assert_eq!(
            verify("12345", URL, &altered, Some(signed.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                &good,
                Some(signed.as_bytes())
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn segments_are_counted_as_carriers_count_them() {
        let gsm = |n: usize| "a".repeat(n);
        assert_eq!(
            segments(&gsm(160)),
            Segments {
                encoding: Encoding::Gsm7,
                count: 1
            }
        );
        assert_eq!(segments(&gsm(161)).count, 2);
        assert_eq!(segments(&gsm(306)).count, 2);
        assert_eq!(segments(&gsm(307)).count, 3);
        // An extension character takes two septets: 80 euros fill one message.
        assert_eq!(
            segments(&"€".repeat(80)),
            Segments {
                encoding: Encoding::Gsm7,
                count: 1
            }
        );
        assert_eq!(segments(&"€".repeat(81)).count, 2);
        // One character outside GSM-7 makes the whole text UCS-2.
        let ucs = |n: usize| format!("{}ł", "a".repeat(n - 1));
        assert_eq!(
            segments(&ucs(70)),
            Segments {
                encoding: Encoding::Ucs2,
                count: 1
            }
        );
        assert_eq!(segments(&ucs(71)).count, 2);
        assert_eq!(segments(&ucs(134)).count, 2);
        assert_eq!(segments(&ucs(135)).count, 3);
        // An emoji is a surrogate pair: two code units, never split.
        assert_eq!(segments(&"😀".repeat(35)).count, 1);
        assert_eq!(segments(&"😀".repeat(36)).count, 2);
    }

    #[test]
    fn numbers_are_written_in_e164() {
        assert_eq!(e164("+1 (415) 867-5310").as_deref(), Some("+14158675310"));
        assert_eq!(
            e164("0049 151 1234 5678").as_deref(),
            Some("+4915112345678")
        );
        assert_eq!(e164("+44.20.7946.0958").as_deref(), Some("+442079460958"));
        for bad in [
            "4158675310",
            "+0123456",
            "+1234567890123456",
            "+1-800-FLOWERS",
            "12345",
            "",
        ] {
            assert_eq!(e164(bad), None, "{bad}");
        }
    }
}
