//! What suggests that two contacts are one customer, shown to an agent before a merge: the
//! same name, an address one holds as an attribute (the web chat's "unverified email") that
//! is a handle of the other, one address on two channels (a number on SMS and on WhatsApp),
//! the same value under the same attribute.

use threadline_protocol::directory::ContactRecord;

/// A contact as the evidence names it: its record and what to call it.
#[derive(Debug)]
pub struct Named<'a> {
    /// The record.
    pub record: &'a ContactRecord,
    /// What to call it in a sentence ("this contact").
    pub label: String,
}

/// Sentences, each a fact on record that links `a` and `b`; empty when nothing does.
pub fn between(a: &Named<'_>, b: &Named<'_>) -> Vec<String> {
    let mut evidence = Vec::new();
    if let (Some(name_a), Some(name_b)) = (
        crate::contact_name::of(a.record),
        crate::contact_name::of(b.record),
    ) {
        if same_text(&name_a, &name_b) {
            evidence.push(format!("Both are named “{}”.", name_a.trim()));
        }
    }
    for (holder, other) in [(a, b), (b, a)] {
        for (key, value) in &holder.record.attributes {
            if key.as_str() == crate::contact_name::ATTRIBUTE {
                continue;
            }
            for handle in &other.record.handles {
                if same_address(value, handle.address()) {
                    evidence.push(format!(
                        "{} “{}” is {}, a handle of {} ({handle}).",
                        capitalised(&format!("{}'s", holder.label)),
                        key.as_str(),
                        value.trim(),
                        other.label
                    ));
                }
            }
        }
    }
    for handle_a in &a.record.handles {
        for handle_b in &b.record.handles {
            if handle_a.channel() != handle_b.channel()
                && same_address(handle_a.address(), handle_b.address())
            {
                evidence.push(format!(
                    "The same address {} is {}'s on {} and {}'s on {}.",
                    handle_a.address(),
                    a.label,
                    handle_a.channel(),
                    b.label,
                    handle_b.channel()
                ));
            }
        }
    }
    for (key, value_a) in &a.record.attributes {
        if key.as_str() == crate::contact_name::ATTRIBUTE {
            continue;
        }
        if let Some(value_b) = b.record.attributes.get(key) {
            if same_text(value_a, value_b) {
                evidence.push(format!("Both have {} “{}”.", key.as_str(), value_a.trim()));
            }
        }
    }
    evidence
}

/// `text` with its first letter upper-case.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// Equal but for case and spacing at the ends (and not empty).
fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    !a.is_empty() && a.to_lowercase() == b.to_lowercase()
}

/// The same address: equal text, or the same phone number however it is written
/// (`+1 555 0100` and `+15550100`: the digits, at least 7 of them, and a leading `+` alike).
fn same_address(a: &str, b: &str) -> bool {
    if same_text(a, b) {
        return true;
    }
    match (phone_digits(a), phone_digits(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The digits of a phone number (with its leading `+`), if the text is one.
fn phone_digits(text: &str) -> Option<String> {
    let text = text.trim();
    let plus = text.starts_with('+');
    let body = text.strip_prefix('+').unwrap_or(text);
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'))
    {
        return None;
    }
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    (digits.len() >= 7).then(|| format!("{}{digits}", if plus { "+" } else { "" }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadline_protocol::{channel::Handle, name::AttributeKey};

    fn record(name: Option<&str>, handles: &[&str], attributes: &[(&str, &str)]) -> ContactRecord {
        let mut record = ContactRecord::default();
        record.display_name = name.map(str::to_owned);
        for handle in handles {
            record
                .handles
                .insert(handle.parse::<Handle>().expect("handle"));
        }
        for (key, value) in attributes {
            record
                .attributes
                .insert(AttributeKey::new(*key).expect("key"), (*value).to_owned());
        }
        record
    }

    fn named<'a>(record: &'a ContactRecord, label: &str) -> Named<'a> {
        Named {
            record,
            label: label.to_owned(),
        }
    }

    #[test]
    fn the_web_chats_unverified_email_links_to_the_email_contact() {
        let visitor = record(
            None,
            &["webchat:v-1"],
            &[("unverified email", "Maria@Example.com ")],
        );
        let mailer = record(Some("Maria Lopez"), &["email:maria@example.com"], &[]);
        let evidence = between(
            &named(&visitor, "the other contact"),
            &named(&mailer, "this contact"),
        );
        assert_eq!(
            evidence,
            vec!["The other contact's “unverified email” is Maria@Example.com, a handle of this contact (email:maria@example.com).".to_owned()]
        );
    }

    #[test]
    fn one_number_on_two_channels_and_the_same_name_are_evidence() {
        let texter = record(Some("Sam Lee"), &["sms:+15550100"], &[("company", "Acme")]);
        let whatsapp = record(
            Some("sam lee"),
            &["whatsapp:+15550100"],
            &[("company", "acme")],
        );
        let evidence = between(&named(&texter, "A"), &named(&whatsapp, "B"));
        assert_eq!(
            evidence,
            vec![
                "Both are named “Sam Lee”.".to_owned(),
                "The same address +15550100 is A's on sms and B's on whatsapp.".to_owned(),
                "Both have company “Acme”.".to_owned(),
            ]
        );
    }

    #[test]
    fn strangers_have_no_evidence() {
        let a = record(Some("Ana"), &["webchat:a"], &[("plan", "pro")]);
        let b = record(Some("Bo"), &["email:bo@example.com"], &[("plan", "free")]);
        assert!(between(&named(&a, "A"), &named(&b, "B")).is_empty());
        // Short numbers are not phone numbers: "12" in two places is not evidence.
        assert_eq!(phone_digits("12"), None);
        assert_eq!(phone_digits("+1 (555) 010-0"), Some("+15550100".to_owned()));
        assert_eq!(phone_digits("maria@example.com"), None);
    }
}
