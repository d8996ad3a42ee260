//! What each notifier sends, and how an attempt ended. Alert data reaches
//! these documents only as JSON string values (serde escapes them), as
//! Slack text with `&`, `<` and `>` escaped (so no `<!channel>` and no
//! links of the sender's choosing), and as email text whose subject has no
//! control characters (no header injection).

use std::time::Duration;

use serde_json::{json, Value};

use super::config::{Notifier, SmtpTls, Target};
use super::{Event, OutboxItem};

/// A notification ready to send: the item, its text, the incident's link.
pub(super) struct Outgoing<'a> {
    pub item: &'a OutboxItem,
    pub text: String,
    pub url: String,
    /// The event's alert (from the notification the event came with).
    pub alert: Option<crate::alert::Alert>,
}

impl Outgoing<'_> {
    /// What the event is about (`web-1`): its alert's subject label.
    fn subject(&self) -> Option<&str> {
        self.alert
            .as_ref()
            .and_then(|a| crate::incident::subject_of(&a.labels))
    }

    /// `INC-0007 · Disk full · web-1`.
    fn headline(&self) -> String {
        let i = self.item;
        match self.subject() {
            Some(s) => format!("{} · {} · {s}", i.incident, i.title),
            None => format!("{} · {}", i.incident, i.title),
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Delivered,
    /// Worth trying again (a timeout, 5xx, 408, 429, a transient SMTP reply);
    /// `after`: the receiver's `Retry-After`.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Trying again cannot help (another 4xx, a permanent SMTP reply).
    Permanent(String),
}

/// At most `max` characters of `s`, with `…` when cut.
pub(super) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if s.chars().count() > max => format!("{}…", &s[..at]),
        _ => s.to_owned(),
    }
}

/// Slack's escaping of message text: the three characters that start
/// links, mentions and entities.
pub(super) fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text for an email body: line breaks and tabs kept, every other control
/// character (terminal escapes such as ESC, C1 controls, DEL) shown as `�`,
/// so alert data cannot drive the terminal of whoever reads the mail.
pub(super) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// Text for a header or a subject: control characters (CR, LF, tabs) as spaces.
pub(super) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// runbookd's own event document (docs/notifications.md).
pub(super) fn webhook_document(o: &Outgoing<'_>) -> Value {
    let i = o.item;
    json!({
        "version": "1",
        "id": i.id,
        "event": i.event,
        "message": o.text,
        "detail": i.detail,
        "incident": {
            "id": i.incident,
            "title": i.title,
            "severity": i.severity,
            "status": i.status,
            "services": i.services,
            "url": o.url,
        },
        "runbook": i.runbook,
        "run_id": i.run_id,
        "step": i.step,
        "created_at": i.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "subject": o.subject(),
        "alert": o.alert.as_ref().map(|a| json!({
            "fingerprint": a.fingerprint,
            "status": a.status,
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": a.starts_at,
            "generatorURL": a.generator_url,
        })),
    })
}

/// A Slack incoming-webhook message: `text` (the notification fallback)
/// and blocks with the incident, runbook, status, failed step and a link.
pub(super) fn slack_message(o: &Outgoing<'_>) -> Value {
    let i = o.item;
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Severity*\n{}", i.severity)}),
        json!({"type": "mrkdwn", "text": format!("*Status*\n{}", i.status)}),
        json!({"type": "mrkdwn", "text": format!("*Event*\n{}", i.event)}),
    ];
    if let Some(rb) = &i.runbook {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Runbook*\n{}", truncate(&slack_escape(rb), 200)), "verbatim": true}));
    }
    if let Some(step) = &i.step {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Failed step*\n{}", truncate(&slack_escape(step), 200)), "verbatim": true}));
    }
    let header = truncate(&one_line(&slack_escape(&o.headline())), 150);
    json!({
        "text": truncate(&slack_escape(&format!("{}: {}", i.incident, o.text)), 3000),
        // Alert data is text, never links, channel names or mentions: the
        // fallback text is not formatted, and every mrkdwn object holding
        // alert data is `verbatim` (Slack then neither auto-links URLs nor
        // link-ifies #channels and @names); nothing unfurls.
        "mrkdwn": false,
        "unfurl_links": false,
        "unfurl_media": false,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header}},
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&slack_escape(&o.text), 2900), "verbatim": true}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("<{}|Open {} in runbookd>", o.url, i.incident)}
            ]},
        ],
    })
}

/// PagerDuty's severity for an incident's.
fn pagerduty_severity(s: crate::runbook::Severity) -> &'static str {
    use crate::runbook::Severity as S;
    match s {
        S::Sev1 => "critical",
        S::Sev2 => "error",
        S::Sev3 => "warning",
        S::Sev4 => "info",
    }
}

/// An Events API v2 event: acknowledge and resolve for those events,
/// trigger for every other (PagerDuty folds them by `dedup_key`).
pub(super) fn pagerduty_event(o: &Outgoing<'_>, routing_key: &str) -> Value {
    let i = o.item;
    let dedup_key = truncate(&i.incident.to_string(), 255);
    let action = match i.event {
        Event::IncidentAcknowledged => "acknowledge",
        Event::IncidentResolved | Event::BudgetUnfrozen => "resolve",
        _ => "trigger",
    };
    if action != "trigger" {
        return json!({"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key});
    }
    let source = i
        .services
        .iter()
        .map(|s| one_line(s).trim().to_owned())
        .find(|s| !s.is_empty())
        .map_or_else(|| "runbookd".to_owned(), |s| truncate(&s, 255));
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "runbookd",
        "client_url": o.url,
        "payload": {
            "summary": truncate(&one_line(&format!("{}: {}", i.incident, o.text)), 1024),
            "source": source,
            "severity": pagerduty_severity(i.severity),
            "timestamp": i.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "component": i.runbook,
            "group": truncate(&i.services.join(","), 255),
            "class": i.event,
            "custom_details": {
                "incident": i.incident,
                "title": i.title,
                "status": i.status,
                "runbook": i.runbook,
                "run_id": i.run_id,
                "step": i.step,
                "detail": truncate(&i.detail, 2000),
            },
        },
        "links": [{"href": o.url, "text": format!("{} in runbookd", i.incident)}],
    })
}

/// The `Retry-After` of a response: seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
        .or(Some(Duration::ZERO))
}

async fn post(
    client: &reqwest::Client,
    n: &Notifier,
    url: &reqwest::Url,
    body: &Value,
    bearer: Option<&str>,
    id: i64,
) -> Outcome {
    let mut req = client
        .post(url.clone())
        .timeout(n.timeout)
        .header("X-Runbookd-Delivery", id.to_string())
        .json(body);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let why = if e.is_timeout() {
                format!("no answer within {}", humantime::format_duration(n.timeout))
            } else if e.is_connect() {
                format!("cannot connect: {}", root_cause(&e))
            } else {
                format!("request failed: {}", root_cause(&e))
            };
            return Outcome::Retry {
                error: why,
                after: None,
            };
        }
    };
    let status = resp.status();
    let after = retry_after(resp.headers());
    if status.is_success() {
        return Outcome::Delivered;
    }
    // At most 4 KiB of the answer is read: enough for its error message.
    let mut resp = resp;
    let mut raw = Vec::new();
    while raw.len() < 4096 {
        match resp.chunk().await {
            Ok(Some(c)) => raw.extend_from_slice(&c),
            _ => break,
        }
    }
    let body = String::from_utf8_lossy(&raw[..raw.len().min(4096)]).into_owned();
    let error = format!(
        "HTTP {}{}",
        status.as_u16(),
        if body.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", truncate(&one_line(body.trim()), 300))
        }
    );
    match status.as_u16() {
        408 | 429 => Outcome::Retry { error, after },
        400..=499 => Outcome::Permanent(error),
        // 3xx are not followed (a notifier URL is a fixed endpoint): retried,
        // so that the operator sees the error and fixes the URL.
        _ => Outcome::Retry { error, after },
    }
}

/// The innermost cause of an error, which says what really failed.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

async fn email(notifier: &Notifier, out: &Outgoing<'_>) -> Outcome {
    use lettre::message::header::ContentType;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    use std::fmt::Write as _;
    let Target::Email {
        host,
        port,
        tls,
        credentials,
        from,
        to,
    } = &notifier.target
    else {
        return Outcome::Permanent("not an email notifier".into());
    };
    let item = out.item;
    // The subject carries the message (which may hold alert data): on one
    // line, so that no value can start a header of its own.
    // Severity once (the default text no longer repeats it), and what the
    // incident is about.
    let subject = truncate(
        &one_line(&format!(
            "[runbookd] {} {}{}: {}",
            item.incident,
            item.severity,
            out.subject().map(|s| format!(" {s}")).unwrap_or_default(),
            out.text
        )),
        200,
    );
    let mut body = format!("{}\n\n", printable(&out.text));
    let _ = writeln!(
        body,
        "Incident: {} ({}, {})",
        item.incident, item.severity, item.status
    );
    let _ = writeln!(body, "Title:    {}", one_line(&item.title));
    if let Some(rb) = &item.runbook {
        let _ = writeln!(body, "Runbook:  {}", one_line(rb));
    }
    if let Some(step) = &item.step {
        let _ = writeln!(body, "Step:     {}", one_line(step));
    }
    let _ = write!(
        body,
        "Event:    {}\nDetail:   {}\n\n{}\n",
        item.event,
        printable(&item.detail),
        out.url
    );
    let mut message = Message::builder()
        .from(from.clone())
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for t in to {
        message = message.to(t.clone());
    }
    let message = match message.body(body) {
        Ok(built) => built,
        Err(e) => return Outcome::Permanent(format!("cannot build the email: {e}")),
    };
    let builder = match tls {
        SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host.as_str(),
        )),
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
    };
    let mut builder = match builder {
        Ok(b) => b.port(*port).timeout(Some(notifier.timeout)),
        Err(e) => return Outcome::Permanent(format!("bad SMTP server `{host}`: {e}")),
    };
    if let Some((user, pass)) = credentials {
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            user.clone(),
            pass.clone(),
        ));
    }
    let transport = builder.build();
    // lettre's timeout is per SMTP command: the whole send gets one too, so
    // that it ends within the attempt's lease.
    let sent = tokio::time::timeout(notifier.timeout * 2, transport.send(message)).await;
    let Ok(sent) = sent else {
        return Outcome::Retry {
            error: format!(
                "SMTP {host}:{port}: no answer within {}",
                humantime::format_duration(notifier.timeout * 2)
            ),
            after: None,
        };
    };
    match sent {
        Ok(_) => Outcome::Delivered,
        Err(e) if e.is_permanent() => {
            Outcome::Permanent(format!("SMTP {host}:{port} refused: {}", root_cause(&e)))
        }
        Err(e) => Outcome::Retry {
            error: format!("SMTP {host}:{port}: {}", root_cause(&e)),
            after: None,
        },
    }
}

/// One attempt to deliver `o` through `n`.
pub(super) async fn send(client: &reqwest::Client, n: &Notifier, o: &Outgoing<'_>) -> Outcome {
    match &n.target {
        Target::Webhook { url, bearer } => {
            post(
                client,
                n,
                url,
                &webhook_document(o),
                bearer.as_deref(),
                o.item.id,
            )
            .await
        }
        Target::Slack { url } => post(client, n, url, &slack_message(o), None, o.item.id).await,
        Target::Pagerduty { url, routing_key } => {
            post(
                client,
                n,
                url,
                &pagerduty_event(o, routing_key),
                None,
                o.item.id,
            )
            .await
        }
        Target::Email { .. } => email(n, o).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_cannot_mention_or_link() {
        assert_eq!(
            slack_escape("<!channel> <https://evil|click> & co"),
            "&lt;!channel&gt; &lt;https://evil|click&gt; &amp; co"
        );
    }

    #[test]
    fn slack_text_is_escaped_before_it_is_cut_to_slacks_limits() {
        let item = super::super::deliver::tests::item("<".repeat(5000));
        let o = Outgoing {
            item: &item,
            text: "<&>".repeat(2000),
            url: "http://x/incidents/INC-0001".into(),
            alert: None,
        };
        let m = slack_message(&o);
        assert!(m["text"].as_str().unwrap().chars().count() <= 3000);
        let section = m["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(
            section.chars().count() <= 2900,
            "{}",
            section.chars().count()
        );
        assert!(!section.contains('<'));
        let pd = pagerduty_event(&o, "key");
        assert_eq!(
            pd["payload"]["source"], "runbookd",
            "a blank service is no source"
        );
        assert!(
            pd["payload"]["custom_details"]["detail"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 2000
        );
    }

    #[test]
    fn one_line_texts_have_no_line_breaks() {
        assert_eq!(one_line("a\r\nBcc: x@y\tz"), "a  Bcc: x@y z");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate(&"é".repeat(2000), 1024).chars().count(), 1024);
    }
}
