//! Every word the dashboard shows, in English and German (`--lang`).
//!
//! One table: a key cannot exist without both texts. Texts with
//! `{placeholders}` are filled by [`Lang::fill`]; a test checks that both
//! languages use the same placeholders.

use crate::view::{CallerRole, CheckState, Mode, PathState, Stage};

use super::theme::Tone;

/// `--lang`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    De,
}

macro_rules! texts {
    ($($key:ident => $en:literal, $de:literal;)*) => {
        /// A text of the dashboard.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum T { $($key),* }

        impl T {
            #[cfg(test)]
            pub(crate) const ALL: &'static [T] = &[$(T::$key),*];

            fn texts(self) -> (&'static str, &'static str) {
                match self { $(T::$key => ($en, $de)),* }
            }
        }
    };
}

texts! {
    TabOverview => "Overview", "Übersicht";
    TabAgents => "Agents", "Agenten";
    TabDecisions => "Decisions", "Entscheidungen";
    TabApprovals => "Approvals", "Freigaben";
    TabAudit => "Audit", "Audit";
    TabCluster => "Cluster", "Cluster";

    Live => "live", "aktuell";
    Connecting => "connecting to {controllers} …", "verbinde mit {controllers} …";
    NoViewYet => "no view yet", "noch keine Ansicht";
    Lost => "last update {age} ago; reconnecting to {controllers} in {retry} ({reason})",
        "letzte Aktualisierung vor {age}; neue Verbindung zu {controllers} in {retry} ({reason})";
    LostNever => "no view received; reconnecting to {controllers} in {retry} ({reason})",
        "keine Ansicht erhalten; neue Verbindung zu {controllers} in {retry} ({reason})";
    StatusLine => "{state}{address} · log {index} · runbook v{runbook} · role {role} · updated {age} ago",
        "{state}{address} · Log {index} · Runbook v{runbook} · Rolle {role} · aktualisiert vor {age}";

    Healthy => "healthy", "gesund";
    Failed => "failed", "ausgefallen";
    Unknown => "unknown", "unbekannt";
    Active => "active", "aktiv";
    Frozen => "frozen", "eingefroren";
    NoHealthyPath => "ALARM: no healthy path", "ALARM: kein gesunder Pfad";
    Stale => "stale", "veraltet";
    CheckOk => "ok", "ok";
    CheckWarning => "warning", "Warnung";
    CheckCritical => "critical", "kritisch";
    Connected => "connected", "verbunden";
    Disconnected => "disconnected", "getrennt";

    ModeAuto => "auto", "automatisch";
    ModeApprove => "approve", "Freigabe";
    ModeDryRun => "dry-run", "Probelauf";

    StageProposed => "proposed", "vorgeschlagen";
    StageApproved => "approved", "freigegeben";
    StageDispatched => "dispatched", "ausgelöst";
    StageSucceeded => "succeeded", "ausgeführt";
    StageFailed => "failed", "fehlgeschlagen";
    StageTimedOut => "timed out", "Zeit überschritten";
    StageVerified => "verified", "bestätigt";
    StageAbandoned => "abandoned", "aufgegeben";
    StageRejected => "rejected", "abgelehnt";

    RoleViewer => "viewer", "viewer";
    RoleOperator => "operator", "operator";
    RoleAdmin => "admin", "admin";

    ColServicePath => "SERVICE / PATH", "DIENST / PFAD";
    ColMode => "MODE", "MODUS";
    ColState => "STATE", "ZUSTAND";
    ColSince => "SINCE", "SEIT";
    ColVantage => "VANTAGE POINTS", "MESSPUNKTE";
    ColAgent => "AGENT", "AGENT";
    ColLastSeen => "LAST SEEN", "ZULETZT";
    ColCpu => "CPU", "CPU";
    ColMemory => "MEMORY", "SPEICHER";
    ColChecks => "CHECKS", "PRÜFUNGEN";
    ColId => "ID", "ID";
    ColService => "SERVICE", "DIENST";
    ColChange => "CHANGE", "WECHSEL";
    ColStage => "STAGE", "STUFE";
    ColUpdated => "UPDATED", "GEÄNDERT";
    ColWaiting => "WAITING", "WARTET";
    ColIndex => "#", "#";
    ColTime => "TIME (UTC)", "ZEIT (UTC)";
    ColActor => "ACTOR", "WER";
    ColKind => "KIND", "ART";
    ColEntry => "ENTRY", "EINTRAG";
    ColNode => "NODE", "KNOTEN";
    ColAddress => "ADDRESS", "ADRESSE";
    ColRole => "ROLE", "ROLLE";
    ColMatch => "MATCH", "MATCH";
    ColLag => "LAG", "RÜCKSTAND";
    ColContact => "LAST CONTACT", "LETZTER KONTAKT";
    ColCatchingUp => "CATCH-UP", "HOLT AUF";

    NoServices => "No services: no runbook has been applied yet.", "Keine Dienste: noch kein Runbook angewendet.";
    NoAgents => "No agents have reported.", "Keine Agenten haben berichtet.";
    NoDecisions => "No decisions yet.", "Noch keine Entscheidungen.";
    NothingPending => "Nothing waits for approval.", "Nichts wartet auf Freigabe.";
    NoAudit => "No audit entries loaded; press R to load.", "Keine Audit-Einträge geladen; R lädt.";
    AuditLoading => "loading audit entries …", "lade Audit-Einträge …";
    NoCluster => "No cluster status yet.", "Noch kein Cluster-Status.";
    NoMatch => "Nothing matches the filter \"{filter}\".", "Nichts passt zum Filter \"{filter}\".";
    NoMetrics => "no metrics yet", "noch keine Messwerte";
    Ago => "{age} ago", "vor {age}";
    Never => "never", "nie";
    JustNow => "just now", "gerade eben";

    Evidence => "Evidence", "Belege";
    EvidenceLine => "{agent}/{check} on {path}: {status}, {count} in a row, {age} ago",
        "{agent}/{check} auf {path}: {status}, {count}× in Folge, vor {age}";
    NoEvidence => "no evidence recorded", "keine Belege erfasst";
    Lifecycle => "Lifecycle", "Ablauf";
    DecisionFacts => "service {service}: {from} → {to}; mode {mode}; runbook v{runbook}; fencing token {token}",
        "Dienst {service}: {from} → {to}; Modus {mode}; Runbook v{runbook}; Fencing-Token {token}";
    ByOperator => "by {operator}: {reason}", "von {operator}: {reason}";
    VantageLine => "{agent}/{check}: {status}{stale}, seen {age} ago", "{agent}/{check}: {status}{stale}, gesehen vor {age}";
    FrozenBecause => "frozen: {reason}", "eingefroren: {reason}";
    HostLine => "cpu {cpu} %, memory {used} of {total} ({mem} %), load {load}, up {uptime}",
        "CPU {cpu} %, Speicher {used} von {total} ({mem} %), Last {load}, läuft seit {uptime}";
    AgentFacts => "version {version}; report #{seq}; last seen {age} ago", "Version {version}; Bericht Nr. {seq}; zuletzt vor {age}";

    ClusterLeader => "leader: node {id} ({address})", "Leiter: Knoten {id} ({address})";
    ClusterNoLeader => "leader: none known (an election may be under way)", "Leiter: keiner bekannt (vielleicht läuft eine Wahl)";
    ClusterFigures => "term {term} · commit {commit} · applied {applied} · log {first}..{last} · snapshot {snapshot}",
        "Term {term} · Commit {commit} · angewendet {applied} · Log {first}..{last} · Snapshot {snapshot}";
    ClusterUnconfirmed => "⚠ node {node}'s own view: no quorum confirmed it", "⚠ Sicht von Knoten {node}: kein Quorum hat sie bestätigt";
    ClusterJoint => "⚠ membership change half done (joint configuration)", "⚠ Mitgliederwechsel halb fertig (gemeinsame Konfiguration)";
    ClusterAsOf => "answered by node {node}, {age} ago", "beantwortet von Knoten {node}, vor {age}";
    ClusterError => "✖ cluster status: {error}", "✖ Cluster-Status: {error}";
    Leader => "leader", "Leiter";
    Follower => "follower", "Folger";
    Learner => "learner", "Lernender";
    Yes => "yes", "ja";
    No => "no", "nein";

    KeysCommon => "Tab/1-6 view · ↑↓ j/k move · / filter · Enter details · ? help · q quit",
        "Tab/1-6 Ansicht · ↑↓ j/k bewegen · / Filter · Enter Details · ? Hilfe · q Ende";
    KeyApprove => "a approve", "a freigeben";
    KeyReject => "r reject", "r ablehnen";
    KeyReload => "R reload", "R neu laden";
    KeysSandbox => "b break primary · h repair it", "b Primärpfad stören · h reparieren";
    SandboxBreaking => "sandbox: breaking the primary path; watch detection, decision, execution (Decisions, Audit)",
        "Sandbox: Primärpfad wird gestört; Erkennung, Entscheidung, Ausführung ansehen (Entscheidungen, Audit)";
    SandboxRepairing => "sandbox: repairing the primary path; the failback follows once it held (runbook failback.after)",
        "Sandbox: Primärpfad wird repariert; die Rückschaltung folgt, wenn er gehalten hat (Runbook failback.after)";
    Filter => "filter: {filter}", "Filter: {filter}";
    FilterTyping => "filter (Enter keeps it, Esc clears): {filter}▏", "Filter (Enter behält, Esc löscht): {filter}▏";

    NeedsRole => "{action} needs the operator role; you are {role}", "{action} braucht die Rolle operator; Sie sind {role}";
    ActionApprove => "approve", "Freigeben";
    ActionReject => "reject", "Ablehnen";
    NotPending => "decision {id} is {stage}: only a proposed decision can be approved or rejected",
        "Entscheidung {id} ist {stage}: nur eine vorgeschlagene lässt sich freigeben oder ablehnen";
    NothingSelected => "select a decision first", "zuerst eine Entscheidung wählen";

    ConfirmApproveTitle => "Approve decision {id}?", "Entscheidung {id} freigeben?";
    ConfirmApproveBody => "{service}: switch from {from} to {to}. This runs the runbook's action and is recorded under your name.",
        "{service}: Wechsel von {from} zu {to}. Das startet die Aktion des Runbooks und wird unter Ihrem Namen protokolliert.";
    ConfirmKeys => "y approve · n or Esc cancel", "y freigeben · n oder Esc abbrechen";
    RejectTitle => "Reject decision {id}", "Entscheidung {id} ablehnen";
    RejectPrompt => "Reason (required, recorded in the audit log):", "Begründung (Pflicht, steht im Audit-Log):";
    RejectKeys => "Enter reject · Esc cancel", "Enter ablehnen · Esc abbrechen";
    ReasonRequired => "a reason is required", "eine Begründung ist Pflicht";
    Sending => "sending {action} for {id} …", "sende {action} für {id} …";
    ActionDone => "✔ {action} {id}: committed at log index {index}, audit entry {audit}",
        "✔ {action} {id}: übernommen bei Log-Index {index}, Audit-Eintrag {audit}";
    ActionFailed => "✖ {action} {id} failed: {error}", "✖ {action} {id} fehlgeschlagen: {error}";
    AuditFailed => "✖ audit: {error}", "✖ Audit: {error}";

    HelpTitle => "Keys", "Tasten";
    Help => "Tab Shift-Tab  next, previous view
1 … 6          Overview, Agents, Decisions, Approvals, Audit, Cluster
↑ ↓ j k        move; PgUp PgDn Home End (g G) jump; the mouse wheel scrolls
/              filter the list (Enter keeps the filter, Esc clears it)
Enter          details of the selected line
a r            approve, reject the selected proposed decision (operators)
R              reload the audit log (in Audit)
?              this help; Esc or ? closes it
q Ctrl-C       quit",
        "Tab Shift-Tab  nächste, vorige Ansicht
1 … 6          Übersicht, Agenten, Entscheidungen, Freigaben, Audit, Cluster
↑ ↓ j k        bewegen; Bild↑ Bild↓ Pos1 Ende (g G) springen; Mausrad blättert
/              Liste filtern (Enter behält den Filter, Esc löscht ihn)
Enter          Details der gewählten Zeile
a r            gewählte Entscheidung freigeben, ablehnen (Rolle operator)
R              Audit-Log neu laden (in Audit)
?              diese Hilfe; Esc oder ? schließt sie
q Strg-C       beenden";
    HelpSandbox => "b h            break, repair the sandbox's primary path (leitstand dev)",
        "b h            Primärpfad der Sandbox stören, reparieren (leitstand dev)";
    DetailsTitle => "Details (Esc closes)", "Details (Esc schließt)";
    TooSmall => "Window too small", "Fenster zu klein";
}

impl Lang {
    /// The text of `key` in this language.
    pub(crate) fn t(self, key: T) -> &'static str {
        let (en, de) = key.texts();
        match self {
            Lang::En => en,
            Lang::De => de,
        }
    }

    /// The text of `key` with each `{name}` replaced by its value.
    pub(crate) fn fill(self, key: T, values: &[(&str, &str)]) -> String {
        let mut text = self.t(key).to_owned();
        for (name, value) in values {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }

    /// "2 min 14 s ago" in this language.
    pub(crate) fn ago(self, now_unix_ms: i64, then_unix_ms: i64) -> String {
        if then_unix_ms <= 0 {
            return self.t(T::Never).to_owned();
        }
        match u64::try_from(now_unix_ms.saturating_sub(then_unix_ms)) {
            Ok(ms) if ms >= 1000 => self.fill(T::Ago, &[("age", &crate::format::duration(ms))]),
            _ => self.t(T::JustNow).to_owned(),
        }
    }

    pub(crate) fn path_state(self, s: PathState) -> (String, Tone) {
        match s {
            PathState::Healthy => (format!("✔ {}", self.t(T::Healthy)), Tone::Good),
            PathState::Failed => (format!("✖ {}", self.t(T::Failed)), Tone::Bad),
            PathState::Unknown => (format!("? {}", self.t(T::Unknown)), Tone::Warn),
        }
    }

    pub(crate) fn check_state(self, s: CheckState) -> (String, Tone) {
        match s {
            CheckState::Ok => (format!("✔ {}", self.t(T::CheckOk)), Tone::Good),
            CheckState::Warning => (format!("⚠ {}", self.t(T::CheckWarning)), Tone::Warn),
            CheckState::Critical => (format!("✖ {}", self.t(T::CheckCritical)), Tone::Bad),
            CheckState::Unknown => (format!("? {}", self.t(T::Unknown)), Tone::Warn),
        }
    }

    pub(crate) fn stage(self, s: Stage) -> (String, Tone) {
        let (symbol, key, tone) = match s {
            Stage::Unknown => ("?", T::Unknown, Tone::Warn),
            Stage::Proposed => ("◇", T::StageProposed, Tone::Warn),
            Stage::Approved => ("◆", T::StageApproved, Tone::Neutral),
            Stage::Dispatched => ("→", T::StageDispatched, Tone::Neutral),
            Stage::Succeeded => ("✔", T::StageSucceeded, Tone::Good),
            Stage::Failed => ("✖", T::StageFailed, Tone::Bad),
            Stage::TimedOut => ("◔", T::StageTimedOut, Tone::Bad),
            Stage::Verified => ("✔", T::StageVerified, Tone::Good),
            Stage::Abandoned => ("∅", T::StageAbandoned, Tone::Bad),
            Stage::Rejected => ("✗", T::StageRejected, Tone::Neutral),
        };
        (format!("{symbol} {}", self.t(key)), tone)
    }

    pub(crate) fn mode(self, m: Mode) -> &'static str {
        match m {
            Mode::Auto => self.t(T::ModeAuto),
            Mode::Approve => self.t(T::ModeApprove),
            Mode::DryRun => self.t(T::ModeDryRun),
            Mode::Unknown => self.t(T::Unknown),
        }
    }

    pub(crate) fn role(self, r: CallerRole) -> &'static str {
        match r {
            CallerRole::Viewer => self.t(T::RoleViewer),
            CallerRole::Operator => self.t(T::RoleOperator),
            CallerRole::Admin => self.t(T::RoleAdmin),
            CallerRole::Unknown => self.t(T::Unknown),
        }
    }

    pub(crate) fn connected(self, connected: bool) -> (String, Tone) {
        if connected {
            (format!("● {}", self.t(T::Connected)), Tone::Good)
        } else {
            (format!("○ {}", self.t(T::Disconnected)), Tone::Bad)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders(text: &str) -> Vec<&str> {
        let mut names: Vec<&str> = text
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    #[test]
    fn every_text_exists_in_both_languages_with_the_same_placeholders() {
        for key in T::ALL {
            let (en, de) = (Lang::En.t(*key), Lang::De.t(*key));
            assert!(!en.trim().is_empty(), "{key:?} has no English text");
            assert!(!de.trim().is_empty(), "{key:?} has no German text");
            assert_eq!(
                placeholders(en),
                placeholders(de),
                "{key:?}: English and German fill in different values"
            );
        }
        assert!(T::ALL.len() > 100, "the table is the whole dashboard");
    }

    #[test]
    fn every_state_has_a_word_and_a_one_column_symbol() {
        use ratatui::text::Line;
        let mut shown = Vec::new();
        for lang in [Lang::En, Lang::De] {
            for s in [PathState::Healthy, PathState::Failed, PathState::Unknown] {
                shown.push(lang.path_state(s).0);
            }
            for s in [
                CheckState::Ok,
                CheckState::Warning,
                CheckState::Critical,
                CheckState::Unknown,
            ] {
                shown.push(lang.check_state(s).0);
            }
            for s in Stage::LIFECYCLE.into_iter().chain([
                Stage::Failed,
                Stage::TimedOut,
                Stage::Abandoned,
                Stage::Rejected,
                Stage::Unknown,
            ]) {
                shown.push(lang.stage(s).0);
            }
            shown.push(lang.connected(true).0);
            shown.push(lang.connected(false).0);
        }
        for text in shown {
            let (symbol, word) = text.split_once(' ').expect("symbol, space, word");
            assert_eq!(
                Line::from(symbol).width(),
                1,
                "{text:?}: the symbol takes one column"
            );
            assert!(
                word.chars().all(|c| c.is_alphabetic() || c == ' '),
                "{text:?} has a word"
            );
        }
    }
}
