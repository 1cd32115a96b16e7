//! Microsoft Teams (`kind = "teams"`): an incoming webhook or a Workflows
//! ("When a Teams webhook request is received") URL, POSTed one message per
//! group with one Adaptive Card attachment
//! (`contentType: application/vnd.microsoft.card.adaptive`, card version
//! 1.4): the subject as the title, the rule's description, each notice's
//! facts as a `FactSet`, and an `Action.OpenUrl` button to the dashboard
//! view per notice (the first few).
//!
//! Teams renders Markdown in `TextBlock` text and in facts' titles and
//! values, so every text from events or config (an app version, a
//! description) has every ASCII punctuation character backslash-escaped, as
//! CommonMark allows: a release named `[Open](https://evil.example)` shows
//! as typed, neither a link nor (with `\:`) a bare URL Teams would link.
//! Button titles are plain text, and URLs are ours, every value
//! percent-encoded.

use std::time::Duration;

use serde_json::{json, Value};

use super::message::{truncate, AlertGroup, AlertMessage};
use crate::error::Result;

/// Segments shown per card; the rest are counted (Teams takes 28 KB).
const SEGMENTS_SHOWN: usize = 10;
/// Buttons per card (Teams shows few).
const BUTTONS: usize = 5;
/// Characters of a title and of a fact's value, before escaping.
const TITLE_CHARS: usize = 300;
const VALUE_CHARS: usize = 1000;

/// A Teams channel's settings.
#[derive(Clone)]
pub struct TeamsConfig {
    /// The webhook's URL (a secret: it is the credential).
    pub url: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for TeamsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamsConfig").field("url", &"<redacted>").field("timeout", &self.timeout).finish()
    }
}

/// Text as Teams shows it literally: every ASCII punctuation character
/// backslash-escaped (CommonMark), so nothing in it is Markdown.
pub fn teams_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for c in text.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn text_block(text: &str, heading: bool) -> Value {
    let mut block = json!({"type": "TextBlock", "text": teams_text(&truncate(text, TITLE_CHARS)), "wrap": true});
    if heading {
        block["weight"] = json!("Bolder");
        block["size"] = json!("Medium");
        block["style"] = json!("heading");
    }
    block
}

fn facts(m: &AlertMessage) -> Value {
    let facts: Vec<Value> = m
        .facts()
        .into_iter()
        .map(|(label, value)| json!({"title": teams_text(label), "value": teams_text(&truncate(&value, VALUE_CHARS))}))
        .collect();
    json!({"type": "FactSet", "facts": facts})
}

/// The message: one Adaptive Card for the group.
pub fn payload(group: &AlertGroup) -> Value {
    let lead = group.lead();
    let mut body = vec![text_block(&group.subject(), true)];
    if let Some(description) = &lead.description {
        body.push(text_block(description, false));
    }
    let several = group.changed().len() > 1;
    for m in group.changed().iter().take(SEGMENTS_SHOWN) {
        if several {
            let mut heading = text_block(&m.subject(), false);
            heading["weight"] = json!("Bolder");
            heading["separator"] = json!(true);
            body.push(heading);
        }
        body.push(facts(m));
    }
    if group.changed().len() > SEGMENTS_SHOWN {
        body.push(text_block(&format!("…and {} more segments", group.changed().len() - SEGMENTS_SHOWN), false));
    }
    let actions: Vec<Value> = group
        .changed()
        .iter()
        .take(BUTTONS)
        .map(|m| {
            let title = if several { format!("Open dashboard: {}", m.place()) } else { "Open dashboard".into() };
            json!({"type": "Action.OpenUrl", "title": truncate(&title, 100), "url": m.dashboard_url})
        })
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions,
                "msteams": {"width": "Full"},
            },
        }],
    })
}

/// POSTs the group's card.
#[tracing::instrument(skip_all)]
pub async fn send(http: &reqwest::Client, config: &TeamsConfig, group: &AlertGroup) -> Result<()> {
    let request = http.post(&config.url).timeout(config.timeout).json(&payload(group));
    super::http::send(request).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::message::tests::message;
    use crate::delivery::MessageKind;
    use synchealth_store::Dimension;

    #[test]
    fn every_punctuation_character_is_escaped_so_no_link_or_emphasis_survives() {
        assert_eq!(teams_text("[Open](https://evil.example) *x*"), r"\[Open\]\(https\:\/\/evil\.example\) \*x\*");
        assert_eq!(teams_text("release 2"), "release 2");
    }

    #[test]
    fn the_card_is_an_adaptive_card_with_facts_and_a_dashboard_button_and_a_hostile_version_escaped() {
        let mut m = message(MessageKind::Firing, Some(0.5));
        m.segment = Some((Dimension::AppVersion, "[pwn](https://evil.example)".into()));
        let card = payload(&AlertGroup::single(m.clone()));
        let attachment = &card["attachments"][0];
        assert_eq!(attachment["contentType"], "application/vnd.microsoft.card.adaptive");
        let content = &attachment["content"];
        assert_eq!((content["type"].as_str(), content["version"].as_str()), (Some("AdaptiveCard"), Some("1.4")));
        assert_eq!(content["actions"][0]["type"], "Action.OpenUrl");
        assert_eq!(content["actions"][0]["url"], m.dashboard_url.as_str());
        let text = content["body"].to_string();
        assert!(!text.contains("[pwn]("), "{text}");
        assert!(text.contains(r"\\[pwn\\]\\(https\\:"), "{text}");
    }
}
