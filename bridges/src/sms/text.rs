//! What SMS is as text: a text's segments as carriers count them (what the agent sees before
//! sending), phone numbers in E.164, and the keywords of opting out and in.

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

/// The longest body of one message Twilio takes (it sends it as up to 10 or so segments);
/// a longer reply goes as several messages.
pub const MAX_BODY_CHARS: usize = 1600;

/// How a reply goes out: the messages it is sent as, and the segments the customer's carrier
/// counts (each billed), what the agent sees before sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The bodies, each at most [`MAX_BODY_CHARS`] characters.
    pub messages: Vec<String>,
    /// Segments of all of them.
    pub segments: usize,
    /// The encoding (UCS-2 if any message needs it).
    pub encoding: Encoding,
}

/// How `text` goes out over SMS.
pub fn plan(text: &str) -> Plan {
    let messages = crate::webhook::split_text(text, MAX_BODY_CHARS);
    let counted: Vec<Segments> = messages.iter().map(|m| segments(m)).collect();
    Plan {
        segments: counted.iter().map(|s| s.count).sum(),
        encoding: if counted.iter().any(|s| s.encoding == Encoding::Ucs2) {
            Encoding::Ucs2
        } else {
            Encoding::Gsm7
        },
        messages,
    }
}

impl Encoding {
    /// Its usual name: `GSM-7` or `UCS-2`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }
}

/// What a customer's text asks of the number, as carriers and Twilio read it: the whole
/// message, one keyword, any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// STOP and its synonyms: write nothing more to me.
    OptOut,
    /// START and its synonyms: you may write again.
    OptIn,
    /// HELP or INFO.
    Help,
}

/// Twilio's default opt-out keywords (and the CTIA's newer ones).
const OPT_OUT: [&str; 9] = [
    "STOP",
    "STOPALL",
    "STOP ALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "OPTOUT",
    "REVOKE",
];
/// Twilio's default opt-in keywords.
const OPT_IN: [&str; 3] = ["START", "YES", "UNSTOP"];
/// Twilio's default help keywords.
const HELP: [&str; 2] = ["HELP", "INFO"];

/// The keyword `body` is, if it is one (nothing else in it but spaces and a final `.` or `!`).
pub fn keyword(body: &str) -> Option<Keyword> {
    let word = body
        .trim()
        .trim_end_matches(['.', '!'])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    if OPT_OUT.contains(&word.as_str()) {
        Some(Keyword::OptOut)
    } else if OPT_IN.contains(&word.as_str()) {
        Some(Keyword::OptIn)
    } else if HELP.contains(&word.as_str()) {
        Some(Keyword::Help)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_long_reply_goes_as_messages_of_1600_characters_with_their_segments_counted() {
        let short = plan("Your order shipped.");
        assert_eq!((short.messages.len(), short.segments), (1, 1));
        assert_eq!(short.encoding.name(), "GSM-7");
        let long = plan(&"word ".repeat(700));
        assert_eq!(long.messages.len(), 3);
        assert!(long
            .messages
            .iter()
            .all(|m| m.chars().count() <= MAX_BODY_CHARS));
        assert_eq!(
            long.segments,
            long.messages
                .iter()
                .map(|m| segments(m).count)
                .sum::<usize>()
        );
        assert_eq!(plan("Merci, à bientôt ł").encoding, Encoding::Ucs2);
    }

    #[test]
    fn keywords_are_the_whole_message_in_any_case() {
        for stop in [
            "STOP",
            "stop",
            " Stop. ",
            "unsubscribe",
            "Stop all",
            "QUIT!",
        ] {
            assert_eq!(keyword(stop), Some(Keyword::OptOut), "{stop}");
        }
        for start in ["START", "yes", "Unstop"] {
            assert_eq!(keyword(start), Some(Keyword::OptIn), "{start}");
        }
        assert_eq!(keyword("help"), Some(Keyword::Help));
        for not in [
            "please stop calling",
            "stopped",
            "",
            "yes please",
            "STOP STOP",
        ] {
            assert_eq!(keyword(not), None, "{not}");
        }
    }
}
