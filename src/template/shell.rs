//! Where template values land in a `shell:` script, and the script text that
//! refers to them.
//!
//! Alert data never becomes shell source. A rendered script arrives here with
//! each value wrapped in sentinel characters; [`substitute`] replaces every
//! wrapped value with a reference to an environment variable that runbookd
//! sets (`"${RUNBOOKD_V1}"` in code, `${RUNBOOKD_V1}` inside double quotes or
//! a here-document) and returns the values separately. The script the shell
//! parses is therefore the template's own text, whatever the alert says; the
//! lexer only decides how each reference is quoted, so a misjudged context
//! can at worst change the quoting of one reference. That is still worth
//! avoiding: an unquoted reference is split into words, and at a command's
//! position those words would name a program to run. So the lexer is
//! exercised against real dash and bash by differential tests, and where the
//! two dialects' views of a place differ, the value is refused.
//!
//! What a variable reference cannot make safe is an expansion the shell
//! itself evaluates again: arithmetic (`$((…))`, `((…))`, `$[…]`, `let`,
//! `[[ … ]]`, array subscripts in `${…}`), `eval`, `trap`, `.`/`source`, a
//! shell's `-c` script, variable *names*, and places where a reference would
//! not expand at all (single quotes, `$'…'`, comments, quoted
//! here-documents). Those are refused. The lexer models both dash (Debian's
//! `/bin/sh`) and bash (`/bin/sh` elsewhere) and refuses a value when either
//! would put it in such a place.
//!
//! Every value also gets a [`Word`] description (command name, option
//! position, URL host) for the warnings of `runbookd check`.

use std::fmt;

pub(super) const OPEN: char = '\u{E000}';
pub(super) const CLOSE: char = '\u{E001}';
pub(super) const POISON: char = '\u{E002}';
/// Stands for a value inside a word's literal text.
const HOLE: char = '\u{E003}';

/// The prefix of the variables that carry template values into scripts.
pub const VAR_PREFIX: &str = "RUNBOOKD_V";

/// A place in a script where a template value is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellContext {
    SingleQuotes,
    DollarQuotes,
    Backquotes,
    Arithmetic,
    ParameterExpansion,
    Comment,
    QuotedHereDocument,
    HereDocumentDelimiter,
    AfterBackslash,
    AfterDollar,
    DoubleBrackets,
    /// An argument of a command that runs its arguments as code.
    Evaluated(String),
    /// The script argument of `sh -c` and the like.
    ShellScript(String),
    /// A variable name for this command.
    VariableName(String),
    /// The script defines aliases, which can turn any later word into `eval`.
    Alias,
    /// dash and bash read this place differently.
    Ambiguous,
}

impl fmt::Display for ShellContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShellContext::SingleQuotes => f.write_str("is inside single quotes, where it would not be expanded (leave it unquoted or use double quotes)"),
            ShellContext::DollarQuotes => f.write_str("is inside $'…' quotes, where it would not be expanded"),
            ShellContext::Backquotes => f.write_str("is inside backquotes (use $(…) instead)"),
            ShellContext::Arithmetic => f.write_str("is inside an arithmetic expansion or command, which evaluates values as expressions (bash runs array subscripts in them as code)"),
            ShellContext::ParameterExpansion => f.write_str("is inside a parameter expansion ${…} (bash evaluates array subscripts in it as code)"),
            ShellContext::Comment => f.write_str("is inside a comment"),
            ShellContext::QuotedHereDocument => f.write_str("is inside a quoted here-document, where it would not be expanded"),
            ShellContext::HereDocumentDelimiter => f.write_str("is used as a here-document delimiter"),
            ShellContext::AfterBackslash => f.write_str("follows a backslash"),
            ShellContext::AfterDollar => f.write_str("follows a `$`"),
            ShellContext::DoubleBrackets => f.write_str("is inside `[[ … ]]`, whose arithmetic operators make bash evaluate operands as code (use `[ … ]`)"),
            ShellContext::Evaluated(cmd) => write!(f, "is an argument of `{cmd}`, which runs its arguments as shell code"),
            ShellContext::ShellScript(prog) => write!(f, "is part of the script of `{prog} -c`, which would run it as shell code (pass it as an argument after the script instead: `{prog} -c '…' {prog} VALUE`)"),
            ShellContext::VariableName(cmd) => write!(f, "would be a variable name for `{cmd}` (bash evaluates subscripts in names as code)"),
            ShellContext::Alias => f.write_str("is in a script that defines aliases, which can turn any later word into `eval`"),
            ShellContext::Ambiguous => f.write_str("is in a place dash and bash read differently (inside or outside quotes); rewrite the script around it"),
        }
    }
}

/// How the reference to a value is quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// In code: `"${V}"`, one word whatever the value.
    Unquoted,
    /// Inside `"…"` or an unquoted here-document: `${V}`.
    Double,
}

/// The word of a simple command a value stands in, for `check`'s warnings.
#[allow(clippy::struct_excessive_bools)] // independent facts about one word
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Word {
    /// The value begins the word: it can make the word start with `-`.
    pub starts_word: bool,
    /// The word is the command name (`argv[0]`).
    pub is_command: bool,
    /// The command's literal name, when known.
    pub program: Option<String>,
    /// An argument `--` came before this word.
    pub after_double_dash: bool,
    /// The word's literal text before the value (quotes removed).
    pub prefix: String,
    /// The word's literal text after the value (up to another value).
    pub suffix: String,
    /// The word is an assignment (`NAME=…`), a redirection target, a case
    /// pattern or a `for` list: not an argument of a command.
    pub not_argument: bool,
}

/// One value of a script and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub quoting: Quoting,
    pub word: Word,
}

/// A script with every value replaced by a variable reference.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Substituted {
    pub script: String,
    /// `(RUNBOOKD_Vn, value)`, one per distinct value, in order of first use.
    pub vars: Vec<(String, String)>,
    /// Every value occurrence, in order.
    pub sites: Vec<Site>,
}

/// A refused value: which one (0-based, in order of appearance) and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub index: usize,
    pub context: ShellContext,
}

/// Why a marked script cannot be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubstituteError {
    Refused(Refused),
    /// A value holds a NUL byte or a sentinel character.
    Unpassable,
}

/// Replaces every marked value of `marked` by a variable reference.
///
/// # Errors
/// The first value in a refused place (under dash or bash), or an
/// unpassable value.
pub fn substitute(marked: &str) -> Result<Substituted, SubstituteError> {
    let chars: Vec<char> = marked.chars().collect();
    // bash first: where both refuse, its reason is the more specific one.
    let bash = Lexer::new(&chars, Dialect::Bash).run()?;
    let dash = Lexer::new(&chars, Dialect::Dash).run()?;
    let mut out = Substituted::default();
    let mut next = 0usize;
    let mut i = 0usize;
    while i < chars.len() {
        let c = chars[i];
        if c != OPEN {
            out.script.push(c);
            i += 1;
            continue;
        }
        let len = chars[i + 1..]
            .iter()
            .position(|&x| x == CLOSE)
            .ok_or(SubstituteError::Unpassable)?;
        let value: String = chars[i + 1..i + 1 + len].iter().collect();
        i += len + 2;
        // Every value must have been placed by both lexers; one that was
        // stepped over unseen is refused, never emitted unexamined.
        let (Some(d), Some(b)) = (dash.get(next), bash.get(next)) else {
            return Err(SubstituteError::Refused(Refused {
                index: next,
                context: ShellContext::Ambiguous,
            }));
        };
        if d.quoting != b.quoting {
            // A reference quoted for the wrong context is expanded unquoted
            // (split into words): never guess.
            return Err(SubstituteError::Refused(Refused {
                index: next,
                context: ShellContext::Ambiguous,
            }));
        }
        next += 1;
        let var = if let Some((name, _)) = out.vars.iter().find(|(_, v)| *v == value) {
            name.clone()
        } else {
            let name = format!("{VAR_PREFIX}{}", out.vars.len() + 1);
            out.vars.push((name.clone(), value));
            name
        };
        match d.quoting {
            Quoting::Unquoted => {
                out.script.push_str("\"${");
                out.script.push_str(&var);
                out.script.push_str("}\"");
            }
            Quoting::Double => {
                out.script.push_str("${");
                out.script.push_str(&var);
                out.script.push('}');
            }
        }
        out.sites.push(d.clone());
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Dash,
    Bash,
}

/// Where a `case` command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// `case WORD` (before `in`).
    Subject,
    /// Before `in`.
    In,
    /// In a pattern list, before `)`.
    Pattern,
    /// In the commands of a branch, until `;;`.
    Body,
}

/// A word being read.
#[derive(Debug, Clone, Default)]
struct WordText {
    /// Literal text, quotes removed, values as [`HOLE`].
    text: String,
    /// The word holds an expansion whose text is unknown here.
    expanded: bool,
    /// Index into the sites of the values in this word.
    sites: Vec<usize>,
}

/// The simple command being read in a code frame.
#[derive(Debug, Clone, Default)]
struct Cmd {
    words: Vec<WordText>,
    cur: Option<WordText>,
    /// The next word is a redirection target.
    redirect: bool,
    /// This "command" is `for NAME in …` (data words, no command).
    for_list: bool,
    /// `[[ … ]]` is open (bash).
    double_brackets: bool,
}

#[derive(Debug, Clone)]
enum Frame {
    /// Top level, `$(…)` (`cmdsub`) or a `(…)` subshell, with its command.
    Code {
        cmdsub: bool,
        depth: u32,
        cmd: Cmd,
        case: Vec<Case>,
    },
    Single,
    AnsiC,
    Double,
    Backquote,
    /// `$((…))`, `((…))` or `$[…]`; `close` is the text that ends it.
    Arith {
        depth: u32,
        bracket: bool,
    },
    Param {
        depth: u32,
    },
    Comment,
    /// An unquoted here-document's body, until its delimiter line.
    HereDoc {
        delim: String,
        strip_tabs: bool,
        quoted: bool,
        line_start: bool,
    },
}

const RESERVED_THEN_COMMAND: &[&str] = &[
    "if", "then", "else", "elif", "do", "while", "until", "!", "{", "time",
];
const RESERVED_END: &[&str] = &["fi", "done", "esac", "}"];
/// Commands that run their arguments as shell code.
const EVALUATING: &[&str] = &[
    "eval", "trap", ".", "source", "let", "alias", "bind", "fc", "complete", "compgen", "enable",
];
/// Commands whose arguments are variable names (bash evaluates subscripts).
const NAMING: &[&str] = &[
    "read",
    "unset",
    "getopts",
    "mapfile",
    "readarray",
    "wait",
    "typeset",
    "declare",
    "local",
    "export",
    "readonly",
    "printf",
    "test",
    "[",
];
/// Words that run the rest of the command: skipped to find the real one.
const WRAPPERS: &[&str] = &[
    "command", "builtin", "exec", "nohup", "env", "time", "nice", "timeout", "setsid", "stdbuf",
    "sudo", "doas", "chroot", "xargs",
];
/// Programs whose `-c` argument is a shell script.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "su", "fish", "csh", "tcsh",
];

struct Lexer<'a> {
    chars: &'a [char],
    dialect: Dialect,
    stack: Vec<Frame>,
    sites: Vec<Site>,
    /// Here-documents announced on the current line: (delimiter, strip tabs, quoted).
    pending_heredocs: Vec<(String, bool, bool)>,
    defines_alias: bool,
    i: usize,
}

fn is_name(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && cs.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// `NAME=…` or `NAME+=…`.
fn is_assignment(w: &str) -> bool {
    w.find('=')
        .is_some_and(|i| is_name(w[..i].strip_suffix('+').unwrap_or(&w[..i])))
}

/// The index of the effective command word of `words` (wrappers, their
/// options and assignments skipped), and its literal name.
fn effective(words: &[WordText]) -> (Option<usize>, Option<String>) {
    let mut i = 0;
    // Leading assignments.
    while i < words.len() && !words[i].expanded && is_assignment(&words[i].text) {
        i += 1;
    }
    loop {
        let Some(w) = words.get(i) else {
            return (None, None);
        };
        if w.expanded || w.text.contains(HOLE) {
            return (Some(i), None);
        }
        let name = w.text.rsplit('/').next().unwrap_or(&w.text).to_owned();
        if !WRAPPERS.contains(&name.as_str()) {
            return (Some(i), Some(name));
        }
        // Skip the wrapper's options, assignments (env) and one numeric or
        // duration argument (timeout, nice -n), conservatively.
        i += 1;
        while let Some(w) = words.get(i) {
            let t = &w.text;
            let numeric = t
                .trim_end_matches(['s', 'm', 'h', 'd'])
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
                && !t.is_empty();
            if !w.expanded && (t.starts_with('-') || is_assignment(t) || numeric) {
                i += 1;
            } else {
                break;
            }
        }
    }
}

/// When the word after `words` is the script of a shell's `-c` (the last
/// word an option cluster holding `c`, after a word naming a shell, however
/// it is wrapped: `sudo -u x bash -c`, `kubectl exec p -- sh -c`), that shell.
fn shell_script_word(words: &[WordText]) -> Option<String> {
    let (last, before) = words.split_last()?;
    let t = &last.text;
    if !(t.starts_with('-') && !t.starts_with("--") && t.contains('c')) {
        return None;
    }
    before.iter().rev().find_map(|w| {
        let name = w.text.rsplit('/').next().unwrap_or(&w.text);
        SHELLS.contains(&name).then(|| name.to_owned())
    })
}

impl<'a> Lexer<'a> {
    fn new(chars: &'a [char], dialect: Dialect) -> Self {
        Lexer {
            chars,
            dialect,
            stack: vec![Frame::Code {
                cmdsub: false,
                depth: 0,
                cmd: Cmd::default(),
                case: Vec::new(),
            }],
            sites: Vec::new(),
            pending_heredocs: Vec::new(),
            defines_alias: false,
            i: 0,
        }
    }

    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    /// Steps over the character a backslash escapes; a value there is
    /// refused (it would never be seen as a value otherwise).
    fn skip_escaped(&mut self) -> Result<(), SubstituteError> {
        if self.peek(0) == Some(OPEN) {
            return Err(self.refuse(ShellContext::AfterBackslash));
        }
        self.i += 1;
        Ok(())
    }

    fn refuse(&self, context: ShellContext) -> SubstituteError {
        SubstituteError::Refused(Refused {
            index: self.sites.len(),
            context,
        })
    }

    /// The command whose word the current text belongs to: the innermost
    /// code frame, unless a here-document body comes first (its text is no
    /// word of any command).
    fn cmd_mut(&mut self) -> Option<&mut Cmd> {
        for f in self.stack.iter_mut().rev() {
            match f {
                Frame::Code { cmd, .. } => return Some(cmd),
                Frame::HereDoc { .. } => return None,
                _ => {}
            }
        }
        None
    }

    fn in_heredoc_text(&self) -> bool {
        for f in self.stack.iter().rev() {
            match f {
                Frame::Code { .. } => return false,
                Frame::HereDoc { .. } => return true,
                _ => {}
            }
        }
        false
    }

    fn run(mut self) -> Result<Vec<Site>, SubstituteError> {
        while self.i < self.chars.len() {
            let c = self.chars[self.i];
            if c == OPEN {
                self.value()?;
                continue;
            }
            let top = self.stack.len() - 1;
            match self.stack[top].clone() {
                Frame::Code { .. } => self.code(c)?,
                Frame::Single => {
                    self.i += 1;
                    if c == '\'' {
                        self.stack.pop();
                    }
                    self.word_char_literal(c, c != '\'');
                }
                Frame::AnsiC => {
                    self.i += 1;
                    if c == '\\' {
                        self.skip_escaped()?;
                    } else if c == '\'' {
                        self.stack.pop();
                    }
                    self.mark_expanded();
                }
                Frame::Double => self.double(c, false)?,
                Frame::Backquote => {
                    self.i += 1;
                    if c == '\\' {
                        self.skip_escaped()?;
                    } else if c == '`' {
                        self.stack.pop();
                    }
                    self.mark_expanded();
                }
                Frame::Arith { depth, bracket } => {
                    self.i += 1;
                    let set = |me: &mut Self, d: u32| {
                        if let Some(Frame::Arith { depth, .. }) = me.stack.last_mut() {
                            *depth = d;
                        }
                    };
                    match c {
                        '$' if self.peek(0) == Some('(') && self.peek(1) != Some('(') => {
                            self.i += 1;
                            self.push_code(true);
                        }
                        '$' if self.peek(0) == Some('{') => {
                            self.i += 1;
                            self.stack.push(Frame::Param { depth: 0 });
                        }
                        '`' => self.stack.push(Frame::Backquote),
                        '\'' if self.dialect == Dialect::Bash => self.stack.push(Frame::Single),
                        '"' => self.stack.push(Frame::Double),
                        '[' if bracket => set(&mut self, depth + 1),
                        ']' if bracket && depth > 0 => set(&mut self, depth - 1),
                        ']' if bracket => {
                            self.stack.pop();
                        }
                        '(' if !bracket => set(&mut self, depth + 1),
                        ')' if !bracket && depth > 0 => set(&mut self, depth - 1),
                        ')' if !bracket => {
                            if self.peek(0) == Some(')') {
                                self.i += 1;
                            }
                            self.stack.pop();
                        }
                        _ => {}
                    }
                    self.mark_expanded();
                }
                Frame::Param { depth } => {
                    self.i += 1;
                    match c {
                        '\\' => self.skip_escaped()?,
                        '{' => {
                            if let Some(Frame::Param { depth }) = self.stack.last_mut() {
                                *depth += 1;
                            }
                        }
                        '}' if depth > 0 => {
                            if let Some(Frame::Param { depth }) = self.stack.last_mut() {
                                *depth -= 1;
                            }
                        }
                        '}' => {
                            self.stack.pop();
                        }
                        '\'' => self.stack.push(Frame::Single),
                        '"' => self.stack.push(Frame::Double),
                        '`' => self.stack.push(Frame::Backquote),
                        '$' if self.peek(0) == Some('(') => {
                            self.i += 1;
                            if self.peek(0) == Some('(') {
                                self.i += 1;
                                self.stack.push(Frame::Arith {
                                    depth: 0,
                                    bracket: false,
                                });
                            } else {
                                self.push_code(true);
                            }
                        }
                        '$' if self.peek(0) == Some('{') => {
                            self.i += 1;
                            self.stack.push(Frame::Param { depth: 0 });
                        }
                        _ => {}
                    }
                    self.mark_expanded();
                }
                Frame::Comment => {
                    self.i += 1;
                    if c == '\n' {
                        self.stack.pop();
                        self.end_line();
                    }
                }
                Frame::HereDoc {
                    delim,
                    strip_tabs,
                    quoted,
                    line_start,
                } => {
                    if line_start {
                        // Is this line the delimiter?
                        let end = self.chars[self.i..]
                            .iter()
                            .position(|&x| x == '\n')
                            .map_or(self.chars.len(), |p| self.i + p);
                        let line: String = self.chars[self.i..end].iter().collect();
                        let line_text = if strip_tabs {
                            line.trim_start_matches('\t')
                        } else {
                            &line
                        };
                        if line_text == delim {
                            self.i = (end + 1).min(self.chars.len());
                            self.stack.pop();
                            self.next_heredoc();
                            continue;
                        }
                        if let Some(Frame::HereDoc { line_start, .. }) = self.stack.last_mut() {
                            *line_start = false;
                        }
                    }
                    if c == '\n' {
                        self.i += 1;
                        if let Some(Frame::HereDoc { line_start, .. }) = self.stack.last_mut() {
                            *line_start = true;
                        }
                    } else if quoted {
                        self.i += 1;
                    } else {
                        self.double(c, true)?;
                    }
                }
            }
        }
        self.end_command();
        if self.defines_alias && !self.sites.is_empty() {
            return Err(SubstituteError::Refused(Refused {
                index: 0,
                context: ShellContext::Alias,
            }));
        }
        Ok(self.sites)
    }

    fn push_code(&mut self, cmdsub: bool) {
        self.stack.push(Frame::Code {
            cmdsub,
            depth: 0,
            cmd: Cmd::default(),
            case: Vec::new(),
        });
    }

    /// The current word (if any) holds an expansion whose text is unknown.
    fn mark_expanded(&mut self) {
        // Only the outermost code frame's word matters for word roles; an
        // expansion nested in it makes that word's text unknown.
        for f in &mut self.stack {
            if let Frame::Code { cmd, .. } = f {
                if let Some(w) = &mut cmd.cur {
                    w.expanded = true;
                }
            }
        }
    }

    /// Adds a literal character to the word being read in the innermost code frame.
    fn word_char_literal(&mut self, c: char, literal: bool) {
        if !literal {
            return;
        }
        if let Some(cmd) = self.cmd_mut() {
            cmd.cur.get_or_insert_with(WordText::default).text.push(c);
        }
    }

    /// Inside double quotes (or an unquoted here-document body when `heredoc`).
    fn double(&mut self, c: char, heredoc: bool) -> Result<(), SubstituteError> {
        self.i += 1;
        match c {
            '"' if !heredoc => {
                self.stack.pop();
            }
            '\\' => {
                if self.peek(0) == Some(OPEN) {
                    return Err(self.refuse(ShellContext::AfterBackslash));
                }
                if let Some(n) = self.peek(0) {
                    self.i += 1;
                    self.word_char_literal(n, true);
                }
            }
            '`' => {
                self.stack.push(Frame::Backquote);
                self.mark_expanded();
            }
            '$' => self.dollar()?,
            _ => self.word_char_literal(c, true),
        }
        Ok(())
    }

    /// After a `$` in code, double quotes or a here-document.
    fn dollar(&mut self) -> Result<(), SubstituteError> {
        match self.peek(0) {
            Some(OPEN) => return Err(self.refuse(ShellContext::AfterDollar)),
            Some('(') if self.peek(1) == Some('(') => {
                self.i += 2;
                self.stack.push(Frame::Arith {
                    depth: 0,
                    bracket: false,
                });
            }
            Some('(') => {
                self.i += 1;
                self.push_code(true);
            }
            Some('[') if self.dialect == Dialect::Bash => {
                self.i += 1;
                self.stack.push(Frame::Arith {
                    depth: 0,
                    bracket: true,
                });
            }
            Some('{') => {
                self.i += 1;
                self.stack.push(Frame::Param { depth: 0 });
            }
            Some('\'') if self.dialect == Dialect::Bash => {
                if matches!(self.stack.last(), Some(Frame::Code { .. })) {
                    self.i += 1;
                    self.stack.push(Frame::AnsiC);
                }
            }
            _ => {
                // `$name`, `$1`, `$?`…: an expansion of the word.
            }
        }
        self.mark_expanded();
        Ok(())
    }

    /// A template value at the current position.
    fn value(&mut self) -> Result<(), SubstituteError> {
        let len = self.chars[self.i + 1..]
            .iter()
            .position(|&x| x == CLOSE)
            .ok_or(SubstituteError::Unpassable)?;
        if self.chars[self.i + 1..self.i + 1 + len]
            .iter()
            .any(|&c| c == POISON || c == OPEN || c == '\0')
        {
            return Err(SubstituteError::Unpassable);
        }
        // Refused wherever it is nested: an evaluating frame anywhere on the
        // stack evaluates what is inside it.
        for f in &self.stack {
            let refused = match f {
                Frame::Single => Some(ShellContext::SingleQuotes),
                Frame::AnsiC => Some(ShellContext::DollarQuotes),
                Frame::Backquote => Some(ShellContext::Backquotes),
                Frame::Arith { .. } => Some(ShellContext::Arithmetic),
                Frame::Param { .. } => Some(ShellContext::ParameterExpansion),
                Frame::Comment => Some(ShellContext::Comment),
                Frame::HereDoc { quoted: true, .. } => Some(ShellContext::QuotedHereDocument),
                Frame::Code { cmd, case, .. } => {
                    if cmd.double_brackets {
                        Some(ShellContext::DoubleBrackets)
                    } else if case.last() == Some(&Case::Pattern) || cmd.for_list {
                        None
                    } else {
                        Self::evaluated(cmd)
                    }
                }
                Frame::Double | Frame::HereDoc { .. } => None,
            };
            if let Some(context) = refused {
                return Err(self.refuse(context));
            }
        }
        let quoting = match self.stack.last() {
            Some(Frame::Code { .. }) => Quoting::Unquoted,
            _ => Quoting::Double,
        };
        let word = if self.in_heredoc_text() {
            Word {
                not_argument: true,
                ..Word::default()
            }
        } else {
            self.word_role()
        };
        let index = self.sites.len();
        self.sites.push(Site { quoting, word });
        if let Some(cmd) = self.cmd_mut() {
            let w = cmd.cur.get_or_insert_with(WordText::default);
            w.text.push(HOLE);
            w.sites.push(index);
        }
        self.i += len + 2;
        Ok(())
    }

    /// Whether the word being read in `cmd` is evaluated by its command.
    fn evaluated(cmd: &Cmd) -> Option<ShellContext> {
        let cur_index = cmd.words.len();
        let (at, name) = effective(&cmd.words);
        let at = at?;
        if at >= cur_index {
            return None; // the value is (in) the command name itself
        }
        let name = name?;
        if EVALUATING.contains(&name.as_str()) {
            return Some(ShellContext::Evaluated(name));
        }
        let args = &cmd.words[at + 1..];
        if let Some(shell) = shell_script_word(&cmd.words) {
            return Some(ShellContext::ShellScript(shell));
        }
        if NAMING.contains(&name.as_str()) {
            let cur = cmd.cur.as_ref().map_or("", |w| w.text.as_str());
            let options: String = args
                .iter()
                .filter(|w| w.text.starts_with('-'))
                .map(|w| w.text.as_str())
                .collect();
            let named = match name.as_str() {
                // `declare x=VALUE` is an assignment; the name, `-i`/`-n`/
                // arrays and anything else evaluate.
                "typeset" | "declare" | "local" | "export" | "readonly" => {
                    !(cur.contains('=') && is_name(cur.split('=').next().unwrap_or("")))
                        || options.contains(['i', 'n', 'a', 'A'])
                }
                // `printf -v NAME`, `test -v NAME`, `[ -v NAME ]`, `wait -p NAME`.
                "printf" | "test" | "[" => args.last().is_some_and(|w| w.text == "-v"),
                "wait" => args.last().is_some_and(|w| w.text == "-p"),
                _ => true,
            };
            if named {
                return Some(ShellContext::VariableName(name));
            }
        }
        None
    }

    /// The role of the word being read in the innermost code frame.
    fn word_role(&self) -> Word {
        let Some((cmd, case)) = self.stack.iter().rev().find_map(|f| match f {
            Frame::Code { cmd, case, .. } => Some((cmd, case)),
            _ => None,
        }) else {
            return Word::default();
        };
        let cur = cmd.cur.as_ref();
        let prefix: String = cur
            .map(|w| w.text.chars().filter(|&c| c != HOLE).collect())
            .unwrap_or_default();
        let starts_word = cur.is_none_or(|w| w.text.is_empty() && !w.expanded);
        let (at, program) = effective(&cmd.words);
        let index = cmd.words.len();
        let is_command = at.is_none_or(|a| a == index) && !cmd.for_list;
        let assignment = at.is_none() && is_assignment(&prefix);
        let after_double_dash =
            at.is_some_and(|a| cmd.words[a + 1..].iter().any(|w| w.text == "--"));
        Word {
            starts_word,
            is_command: is_command && !assignment && !cmd.redirect,
            program: if is_command { None } else { program },
            after_double_dash,
            prefix,
            suffix: String::new(),
            not_argument: assignment
                || cmd.redirect
                || cmd.for_list
                || case.last().is_some_and(|c| *c != Case::Body),
        }
    }

    /// Ends the word being read in the innermost code frame.
    fn end_word(&mut self) {
        let dialect = self.dialect;
        let Some(idx) = self
            .stack
            .iter()
            .rposition(|f| matches!(f, Frame::Code { .. }))
        else {
            return;
        };
        let mut define_alias = false;
        let mut done_suffixes: Vec<(usize, String)> = Vec::new();
        if let Frame::Code { cmd, case, .. } = &mut self.stack[idx] {
            let Some(w) = cmd.cur.take() else { return };
            // Each value's suffix: the literal text after it, to the next value.
            let parts: Vec<&str> = w.text.split(HOLE).collect();
            for (k, &site) in w.sites.iter().enumerate() {
                done_suffixes.push((site, parts.get(k + 1).copied().unwrap_or("").to_owned()));
            }
            if cmd.redirect {
                cmd.redirect = false;
            } else {
                let (at, _) = effective(&cmd.words);
                let at_command = at.is_none() && !is_assignment(&w.text);
                let text = w.text.clone();
                match case.last().copied() {
                    Some(Case::Subject) => {
                        if let Some(c) = case.last_mut() {
                            *c = Case::In;
                        }
                    }
                    Some(Case::In) if text == "in" => {
                        if let Some(c) = case.last_mut() {
                            *c = Case::Pattern;
                        }
                    }
                    Some(Case::Pattern) if text == "esac" => {
                        case.pop();
                        *cmd = Cmd::default();
                    }
                    Some(Case::Pattern) => {}
                    _ if at_command && !w.expanded && text == "case" => {
                        case.push(Case::Subject);
                        *cmd = Cmd::default();
                    }
                    _ if at_command
                        && !w.expanded
                        && text == "esac"
                        && case.last() == Some(&Case::Body) =>
                    {
                        case.pop();
                        *cmd = Cmd::default();
                    }
                    _ if at_command && !w.expanded && text == "[[" && dialect == Dialect::Bash => {
                        cmd.double_brackets = true;
                        cmd.words.push(w);
                    }
                    _ if cmd.double_brackets && text == "]]" => {
                        cmd.double_brackets = false;
                        cmd.words.push(w);
                    }
                    _ if at_command
                        && !w.expanded
                        && (RESERVED_THEN_COMMAND.contains(&text.as_str())
                            || RESERVED_END.contains(&text.as_str())) =>
                    {
                        *cmd = Cmd::default();
                    }
                    _ if at_command && !w.expanded && (text == "for" || text == "select") => {
                        *cmd = Cmd::default();
                        cmd.for_list = true;
                    }
                    _ if cmd.for_list && text == "do" => {
                        *cmd = Cmd::default();
                    }
                    _ => {
                        if at_command && text == "alias" {
                            define_alias = true;
                        }
                        cmd.words.push(w);
                    }
                }
            }
        }
        if define_alias {
            self.defines_alias = true;
        }
        for (site, suffix) in done_suffixes {
            if let Some(s) = self.sites.get_mut(site) {
                s.word.suffix = suffix;
            }
        }
    }

    /// Ends the simple command in the innermost code frame (`;`, `&`, `|`, newline…).
    fn end_command(&mut self) {
        self.end_word();
        if let Some(Frame::Code { cmd, .. }) = self
            .stack
            .iter_mut()
            .rev()
            .find(|f| matches!(f, Frame::Code { .. }))
        {
            *cmd = Cmd::default();
        }
    }

    /// A newline in code: the command ends and announced here-documents begin.
    fn end_line(&mut self) {
        self.end_command();
        self.next_heredoc();
    }

    fn next_heredoc(&mut self) {
        if self.pending_heredocs.is_empty() {
            return;
        }
        let (delim, strip_tabs, quoted) = self.pending_heredocs.remove(0);
        self.stack.push(Frame::HereDoc {
            delim,
            strip_tabs,
            quoted,
            line_start: true,
        });
    }

    fn at_word_start(&self) -> bool {
        match self.stack.last() {
            Some(Frame::Code { cmd, .. }) => cmd.cur.is_none(),
            _ => false,
        }
    }

    fn at_command_position(&self) -> bool {
        match self.stack.last() {
            Some(Frame::Code { cmd, case, .. }) => {
                cmd.cur.is_none()
                    && effective(&cmd.words).0.is_none()
                    && !cmd.for_list
                    && case.last().is_none_or(|c| *c == Case::Body)
            }
            _ => false,
        }
    }

    fn set_case(&mut self, to: Case) {
        if let Some(Frame::Code { case, .. }) = self.stack.last_mut() {
            if let Some(c) = case.last_mut() {
                *c = to;
            }
        }
    }

    fn case_state(&self) -> Option<Case> {
        match self.stack.last() {
            Some(Frame::Code { case, .. }) => case.last().copied(),
            _ => None,
        }
    }

    /// One character in a code frame.
    fn code(&mut self, c: char) -> Result<(), SubstituteError> {
        let next = self.peek(1);
        match c {
            '\\' => {
                if next == Some(OPEN) {
                    return Err(self.refuse(ShellContext::AfterBackslash));
                }
                self.i += 2;
                if next == Some('\n') {
                    return Ok(()); // line continuation
                }
                if let Some(n) = next {
                    self.word_char_literal(n, true);
                }
            }
            '\'' => {
                self.i += 1;
                self.ensure_word();
                self.stack.push(Frame::Single);
            }
            '"' => {
                self.i += 1;
                self.ensure_word();
                self.stack.push(Frame::Double);
            }
            '`' => {
                self.i += 1;
                self.ensure_word();
                self.mark_expanded();
                self.stack.push(Frame::Backquote);
            }
            '$' => {
                self.i += 1;
                self.ensure_word();
                self.dollar()?;
            }
            '#' if self.at_word_start() => {
                self.i += 1;
                self.end_word();
                self.stack.push(Frame::Comment);
            }
            ' ' | '\t' => {
                self.i += 1;
                self.end_word();
            }
            '\n' => {
                self.i += 1;
                if self.case_state() == Some(Case::Pattern) {
                    self.end_word();
                } else {
                    self.end_line();
                }
            }
            ';' => {
                self.i += 1;
                if next == Some(';') || (next == Some('&') && self.dialect == Dialect::Bash) {
                    // `;;`, `;&`, `;;&`: a case branch ends.
                    self.i += 1;
                    if self.peek(0) == Some('&') {
                        self.i += 1;
                    }
                    self.end_command();
                    if self.case_state() == Some(Case::Body) {
                        self.set_case(Case::Pattern);
                    }
                } else {
                    self.end_command();
                }
            }
            '&' | '|' => {
                self.i += 1;
                if c == '&' && next == Some('>') && self.dialect == Dialect::Bash {
                    self.i += 1;
                    self.end_word();
                    self.set_redirect();
                } else {
                    if next == Some(c) || (c == '|' && next == Some('&')) {
                        self.i += 1;
                    }
                    if c == '|' && self.case_state() == Some(Case::Pattern) {
                        self.end_word();
                    } else {
                        self.end_command();
                    }
                }
            }
            '(' => {
                self.i += 1;
                if self.case_state() == Some(Case::Pattern) {
                    self.end_word();
                } else if self.dialect == Dialect::Bash
                    && next == Some('(')
                    && (self.at_command_position() || self.after_for())
                {
                    self.i += 1;
                    self.end_word();
                    self.stack.push(Frame::Arith {
                        depth: 0,
                        bracket: false,
                    });
                } else if self.dialect == Dialect::Bash
                    && self.peek(0).is_some()
                    && matches!(self.chars.get(self.i.wrapping_sub(2)), Some('<' | '>'))
                {
                    // Process substitution `<(…)`: a command list.
                    self.push_code(true);
                } else {
                    self.end_command();
                    if let Some(Frame::Code { depth, .. }) = self.stack.last_mut() {
                        *depth += 1;
                    }
                }
            }
            ')' => {
                self.i += 1;
                // The word before may be `esac`, which ends the case first.
                self.end_word();
                if self.case_state() == Some(Case::Pattern) {
                    self.set_case(Case::Body);
                    if let Some(Frame::Code { cmd, .. }) = self.stack.last_mut() {
                        *cmd = Cmd::default();
                    }
                    return Ok(());
                }
                self.end_command();
                match self.stack.last_mut() {
                    Some(Frame::Code { depth, .. }) if *depth > 0 => *depth -= 1,
                    Some(Frame::Code { cmdsub: true, .. }) => {
                        self.stack.pop();
                    }
                    _ => {}
                }
            }
            '<' if next == Some('<') => {
                self.end_word();
                if self.dialect == Dialect::Bash && self.peek(2) == Some('<') {
                    // Here-string: the next word is data.
                    self.i += 3;
                    self.set_redirect();
                    return Ok(());
                }
                self.i += 2;
                let (delim, strip_tabs, quoted, used, has_value) = self.heredoc_operator();
                if has_value {
                    return Err(self.refuse(ShellContext::HereDocumentDelimiter));
                }
                self.i += used;
                self.pending_heredocs.push((delim, strip_tabs, quoted));
            }
            '<' | '>' => {
                // A word of digits right before is the descriptor, not an argument.
                if let Some(Frame::Code { cmd, .. }) = self.stack.last_mut() {
                    if cmd.cur.as_ref().is_some_and(|w| {
                        !w.text.is_empty() && w.text.chars().all(|d| d.is_ascii_digit())
                    }) {
                        cmd.cur = None;
                    }
                }
                self.end_word();
                self.i += 1;
                if matches!(self.peek(0), Some('>' | '&' | '|')) {
                    self.i += 1;
                }
                if self.dialect == Dialect::Bash && self.peek(0) == Some('(') {
                    return Ok(()); // process substitution, handled at `(`
                }
                self.set_redirect();
            }
            _ => {
                self.i += 1;
                self.word_char_literal(c, true);
            }
        }
        Ok(())
    }

    fn ensure_word(&mut self) {
        if let Some(Frame::Code { cmd, .. }) = self.stack.last_mut() {
            cmd.cur.get_or_insert_with(WordText::default);
        }
    }

    fn set_redirect(&mut self) {
        if let Some(Frame::Code { cmd, .. }) = self.stack.last_mut() {
            cmd.redirect = true;
        }
    }

    fn after_for(&self) -> bool {
        match self.stack.last() {
            Some(Frame::Code { cmd, .. }) => cmd.for_list && cmd.words.is_empty(),
            _ => false,
        }
    }

    /// After `<<`: the delimiter (quotes removed), whether it is `<<-`,
    /// whether it was quoted, how many characters it takes, and whether a
    /// value stands in it.
    fn heredoc_operator(&self) -> (String, bool, bool, usize, bool) {
        let rest = &self.chars[self.i..];
        let mut i = 0;
        let strip_tabs = rest.first() == Some(&'-');
        if strip_tabs {
            i += 1;
        }
        while matches!(rest.get(i), Some(' ' | '\t')) {
            i += 1;
        }
        let mut delim = String::new();
        let mut quote: Option<char> = None;
        let mut quoted = false;
        let mut has_value = false;
        while let Some(&c) = rest.get(i) {
            if c == OPEN || c == CLOSE {
                has_value = true;
            }
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (None, '\'' | '"') => {
                    quote = Some(c);
                    quoted = true;
                }
                (None, '\\') => {
                    quoted = true;
                    i += 1;
                    if let Some(&n) = rest.get(i) {
                        has_value |= n == OPEN || n == CLOSE;
                        delim.push(n);
                    }
                }
                (None, ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')') => break,
                (_, c) => delim.push(c),
            }
            i += 1;
        }
        (delim, strip_tabs, quoted, i.min(rest.len()), has_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks `{}` in `src` as values `v1`, `v2`, … in order.
    fn mark(src: &str) -> String {
        let mut out = String::new();
        let mut n = 0;
        let mut parts = src.split("{}").peekable();
        while let Some(p) = parts.next() {
            out.push_str(p);
            if parts.peek().is_some() {
                n += 1;
                out.push(OPEN);
                out.push('v');
                out.push_str(&n.to_string());
                out.push(CLOSE);
            }
        }
        out
    }

    fn script(src: &str) -> String {
        match substitute(&mark(src)) {
            Ok(s) => s.script,
            Err(e) => panic!("{src:?}: {e:?}"),
        }
    }

    fn refused(src: &str) -> ShellContext {
        match substitute(&mark(src)) {
            Err(SubstituteError::Refused(r)) => r.context,
            other => panic!("{src:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn values_become_variable_references() {
        assert_eq!(script("echo {}"), r#"echo "${RUNBOOKD_V1}""#);
        assert_eq!(script("echo \"host {}\""), r#"echo "host ${RUNBOOKD_V1}""#);
        assert_eq!(
            script("kubectl rollout restart deployment/{}"),
            r#"kubectl rollout restart deployment/"${RUNBOOKD_V1}""#
        );
        assert_eq!(
            script("x=$(echo {}) && y=\"$(echo {})\""),
            r#"x=$(echo "${RUNBOOKD_V1}") && y="$(echo "${RUNBOOKD_V2}")""#
        );
        assert_eq!(
            script("cat <<EOF\nhost {}\nEOF\necho {}"),
            "cat <<EOF\nhost ${RUNBOOKD_V1}\nEOF\necho \"${RUNBOOKD_V2}\""
        );
        // The `)` of a case pattern inside $(…) does not end the substitution.
        assert_eq!(
            script("x=\"$(case a in a) echo {};; esac)\""),
            r#"x="$(case a in a) echo "${RUNBOOKD_V1}";; esac)""#
        );
        let s = substitute(&mark("echo {} {}")).unwrap();
        assert_eq!(
            s.vars,
            [
                ("RUNBOOKD_V1".to_owned(), "v1".to_owned()),
                ("RUNBOOKD_V2".to_owned(), "v2".to_owned())
            ]
        );
    }

    #[test]
    fn the_same_value_shares_a_variable() {
        let marked = format!("echo {OPEN}x{CLOSE} {OPEN}x{CLOSE}");
        let s = substitute(&marked).unwrap();
        assert_eq!(s.script, r#"echo "${RUNBOOKD_V1}" "${RUNBOOKD_V1}""#);
        assert_eq!(s.vars.len(), 1);
    }

    #[test]
    fn evaluating_places_are_refused() {
        for (src, want) in [
            ("echo '{}'", ShellContext::SingleQuotes),
            ("echo $'{}'", ShellContext::DollarQuotes),
            ("echo `echo {}`", ShellContext::Backquotes),
            ("echo $(( {} + 1 ))", ShellContext::Arithmetic),
            ("echo \"$(( $(echo {}) + 1 ))\"", ShellContext::Arithmetic),
            ("(( {} > 1 )) && echo big", ShellContext::Arithmetic),
            ("echo $[ {} + 1 ]", ShellContext::Arithmetic),
            (
                "for (( i = 0; i < {}; i++ )); do :; done",
                ShellContext::Arithmetic,
            ),
            ("echo ${x:-{}}", ShellContext::ParameterExpansion),
            ("echo ${a[{}]}", ShellContext::ParameterExpansion),
            ("echo hi # {}", ShellContext::Comment),
            ("cat <<'EOF'\n{}\nEOF", ShellContext::QuotedHereDocument),
            ("cat <<{}\nx\n", ShellContext::HereDocumentDelimiter),
            ("echo \\{}", ShellContext::AfterBackslash),
            // Found by the `shell` fuzz target: a value escaped inside
            // backquotes, `${…}` or `$'…'` was stepped over unseen.
            ("echo `<\\{}`", ShellContext::AfterBackslash),
            ("echo ${x:-\\{}}", ShellContext::AfterBackslash),
            ("echo $'\\{}'", ShellContext::AfterBackslash),
            ("cat <<\\{}\nx\n", ShellContext::HereDocumentDelimiter),
            ("echo ${}", ShellContext::AfterDollar),
            ("[[ {} -eq 1 ]]", ShellContext::DoubleBrackets),
            ("eval {}", ShellContext::Evaluated("eval".into())),
            (
                "eval \"$(echo {})\"",
                ShellContext::Evaluated("eval".into()),
            ),
            ("trap {} EXIT", ShellContext::Evaluated("trap".into())),
            (". {}", ShellContext::Evaluated(".".into())),
            ("let x={}", ShellContext::Evaluated("let".into())),
            ("command eval {}", ShellContext::Evaluated("eval".into())),
            ("sh -c {}", ShellContext::ShellScript("sh".into())),
            (
                "/bin/bash -ec \"echo {}\"",
                ShellContext::ShellScript("bash".into()),
            ),
            (
                "sudo -u x bash -c {}",
                ShellContext::ShellScript("bash".into()),
            ),
            ("read {}", ShellContext::VariableName("read".into())),
            (
                "printf -v {} %s x",
                ShellContext::VariableName("printf".into()),
            ),
            (
                "declare -i n={}",
                ShellContext::VariableName("declare".into()),
            ),
            ("local {}=1", ShellContext::VariableName("local".into())),
            ("alias e=eval\ne {}", ShellContext::Alias),
        ] {
            assert_eq!(refused(src), want, "{src:?}");
        }
    }

    #[test]
    fn safe_places_stay_allowed() {
        for src in [
            "echo \"a\" 'b' {}",
            "echo \"it's\" {}",
            "# it's fine\necho {}",
            "cat <<EOF\nx\nEOF\necho {}",
            "cat <<-\"END\"\n\tx\n\tEND\necho {}",
            "local x={}",
            "export X={}",
            "sh -c 'echo \"$1\"' sh {}",
            "[ {} = x ] && echo yes",
            "case {} in a|b) echo {};; *) echo no;; esac",
            "for h in {} b; do echo \"$h\"; done",
            "f() { echo \"$1\"; }\nf {}",
            "x=$((1 + 2)); echo {}",
            "echo ${x:-default} {}",
            "printf '%s\\n' {}",
        ] {
            script(src);
        }
    }

    #[test]
    fn words_are_described_for_warnings() {
        let s = substitute(&mark("{} --flag")).unwrap();
        assert!(s.sites[0].word.is_command);
        let s = substitute(&mark("kubectl logs {}")).unwrap();
        let w = &s.sites[0].word;
        assert!(w.starts_word && !w.is_command && !w.after_double_dash);
        assert_eq!(w.program.as_deref(), Some("kubectl"));
        let s = substitute(&mark("kubectl logs -- {}")).unwrap();
        assert!(s.sites[0].word.after_double_dash);
        let s = substitute(&mark("curl http://{}.svc/x")).unwrap();
        let w = &s.sites[0].word;
        assert_eq!(
            (w.prefix.as_str(), w.suffix.as_str()),
            ("http://", ".svc/x")
        );
        assert!(!w.starts_word);
        let s = substitute(&mark("X={} cmd")).unwrap();
        assert!(s.sites[0].word.not_argument && !s.sites[0].word.is_command);
        let s = substitute(&mark("echo x > {}")).unwrap();
        assert!(s.sites[0].word.not_argument);
    }

    #[test]
    fn unpassable_values_are_refused() {
        for marked in [
            format!("echo {OPEN}a\u{0}b{CLOSE}"),
            format!("echo {OPEN}a{POISON}{CLOSE}"),
            format!("echo {OPEN}a"),
        ] {
            assert_eq!(substitute(&marked), Err(SubstituteError::Unpassable));
        }
    }

    #[test]
    fn odd_endings_do_not_panic() {
        for src in [
            "cat <<\\", "<<", "echo $", "echo \\", "$((", "${", "case", "((", "$[", "echo $'",
        ] {
            let _ = substitute(&mark(src));
            let _ = substitute(&mark(&format!("{src}{{}}")));
        }
    }
}
