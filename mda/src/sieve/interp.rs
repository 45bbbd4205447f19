//! The interpreter: runs compiled scripts as a machine with an explicit stack of frames
//! (one per script or included script) and of blocks within each frame, so neither
//! `include` nor nesting recurses on the Rust stack. Tests nest at most
//! [`limits::NESTING`] deep (checked at compile time). Every command and test costs a step
//! of a per-delivery budget; compared bytes count against another.

use std::collections::{HashMap, HashSet};

use super::ast::{Command, Program};
use super::message::{Field, parse_header};
use super::{Action, NamedScript, Outcome, Script, SieveEnvelope, SieveHost, SieveMessage, limits};

/// Why a script stopped early.
pub(crate) enum Flow {
    Next,
    /// `stop`: ends all scripts of this delivery... of this top-level script.
    Stop,
    /// `return`: ends the current (included) script.
    Return,
    /// `include`: run this script next, then continue.
    Include {
        script: Script,
        name: String,
    },
}

/// Where execution is within one script: nested blocks, each a path from the top level
/// (command index, branch index; the `else` block is branch `branches.len()`).
struct Level {
    path: Vec<(usize, usize)>,
    next: usize,
}

pub(crate) struct Frame {
    pub script: Script,
    pub name: String,
    /// Run by `include` (errors then name it).
    included: bool,
    levels: Vec<Level>,
    /// Local variables (lowercase names) and the names declared `global`.
    pub vars: HashMap<String, String>,
    pub globals: HashSet<String>,
    /// `${0}`..`${9}` of the last successful :matches/:regex.
    pub match_vars: Vec<String>,
}

/// State of one delivery's execution, shared by all its scripts.
pub(crate) struct Exec<'a> {
    pub host: &'a mut dyn SieveHost,
    pub envelope: &'a SieveEnvelope,
    pub message: &'a SieveMessage<'a>,
    /// Header fields, as edited by editheader.
    pub fields: Vec<Field>,
    /// The fields as delivered (editheader cannot remove these from `:index` counting... used
    /// to tell whether the header changed).
    pub header_changed: bool,
    pub body_start: usize,
    pub actions: Vec<Action>,
    pub implicit_keep: bool,
    /// The imap4flags internal variable.
    pub flags: Vec<String>,
    pub global_vars: HashMap<String, String>,
    pub steps: u64,
    pub work: u64,
    pub redirects: usize,
    pub includes: usize,
    /// Scripts already included with `:once` (by name and kind).
    pub included_once: HashSet<String>,
    pub line: u32,
}

fn block<'p>(program: &'p Program, path: &[(usize, usize)]) -> &'p [Command] {
    let mut cmds: &[Command] = &program.commands;
    for &(ci, bi) in path {
        cmds = match &cmds[ci] {
            Command::If {
                branches,
                otherwise,
            } => {
                if bi < branches.len() {
                    &branches[bi].1
                } else {
                    otherwise.as_deref().unwrap_or(&[])
                }
            }
            Command::Action(_) => &[],
        };
    }
    cmds
}

impl Frame {
    pub fn new(script: Script, name: String, included: bool) -> Frame {
        Frame {
            script,
            name,
            included,
            levels: vec![Level {
                path: Vec::new(),
                next: 0,
            }],
            vars: HashMap::new(),
            globals: HashSet::new(),
            match_vars: Vec::new(),
        }
    }
}

pub(crate) fn run<'a>(
    scripts: &[NamedScript],
    message: &'a SieveMessage<'a>,
    envelope: &'a SieveEnvelope,
    host: &'a mut dyn SieveHost,
) -> Outcome {
    let (fields, body_start) = parse_header(message.bytes());
    let mut exec = Exec {
        host,
        envelope,
        message,
        fields,
        header_changed: false,
        body_start,
        actions: Vec::new(),
        implicit_keep: true,
        flags: Vec::new(),
        global_vars: HashMap::new(),
        steps: 0,
        work: 0,
        redirects: 0,
        includes: 0,
        included_once: HashSet::new(),
        line: 0,
    };
    let mut errors = Vec::new();
    for named in scripts {
        // A runtime error ends the script; its actions so far stand, and the implicit keep is
        // restored so the message is never lost.
        if let Err(e) = exec.run_script(named) {
            errors.push(format!("script {}: {e}", named.name));
            exec.implicit_keep = true;
        }
        if !exec.implicit_keep {
            break;
        }
    }
    if exec.implicit_keep {
        let flags = exec.flags.clone();
        exec.actions.push(Action::Keep { flags });
    }
    let header = exec.header_changed.then(|| {
        let mut out = Vec::new();
        for f in &exec.fields {
            out.extend_from_slice(f.name.as_bytes());
            out.push(b':');
            out.extend_from_slice(f.raw.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    });
    Outcome {
        actions: dedupe(exec.actions),
        errors,
        header,
    }
}

/// The same mailbox filed twice is filed once (RFC 5228 2.10.3); keep and fileinto "INBOX"
/// are the same.
fn dedupe(actions: Vec<Action>) -> Vec<Action> {
    let mut out: Vec<Action> = Vec::with_capacity(actions.len());
    for a in actions {
        let target = |a: &Action| match a {
            Action::Keep { .. } => Some("INBOX".to_string()),
            Action::FileInto { mailbox, .. } if mailbox.eq_ignore_ascii_case("INBOX") => {
                Some("INBOX".to_string())
            }
            Action::FileInto { mailbox, .. } => Some(mailbox.clone()),
            _ => None,
        };
        if let Some(t) = target(&a)
            && out.iter().any(|o| target(o).as_deref() == Some(t.as_str()))
        {
            continue;
        }
        if let Action::Redirect { address, .. } = &a
            && out.iter().any(
                |o| matches!(o, Action::Redirect { address: b, .. } if b.eq_ignore_ascii_case(address)),
            )
        {
            continue;
        }
        out.push(a);
    }
    out
}

impl Exec<'_> {
    pub fn step(&mut self) -> Result<(), String> {
        self.steps += 1;
        if self.steps > limits::STEPS {
            return Err("too many steps".into());
        }
        Ok(())
    }

    pub fn spend(&mut self, bytes: usize) -> Result<(), String> {
        self.work += bytes as u64;
        if self.work > limits::WORK_BYTES {
            return Err("too much work comparing".into());
        }
        Ok(())
    }

    pub fn push_action(&mut self, action: Action) -> Result<(), String> {
        if self.actions.len() >= limits::ACTIONS {
            return Err(format!("more than {} actions", limits::ACTIONS));
        }
        self.actions.push(action);
        Ok(())
    }

    /// Runs one top-level script and everything it includes.
    fn run_script(&mut self, named: &NamedScript) -> Result<(), String> {
        let mut frames = vec![Frame::new(named.script.clone(), named.name.clone(), false)];
        while let Some(frame) = frames.last_mut() {
            let Some(level) = frame.levels.last_mut() else {
                frames.pop();
                continue;
            };
            let program = frame.script.0.clone();
            let cmds = block(&program, &level.path);
            if level.next >= cmds.len() {
                frame.levels.pop();
                continue;
            }
            let index = level.next;
            level.next += 1;
            self.step()?;
            match &cmds[index] {
                Command::If {
                    branches,
                    otherwise,
                } => {
                    let mut chosen = None;
                    for (bi, (test, _)) in branches.iter().enumerate() {
                        self.line = test.call.line;
                        if self
                            .eval_test(frame, test)
                            .map_err(|e| at(frame, self.line, e))?
                        {
                            chosen = Some(bi);
                            break;
                        }
                    }
                    let chosen = chosen.or(otherwise.as_ref().map(|_| branches.len()));
                    if let Some(bi) = chosen {
                        let mut path = level_path(frame);
                        path.push((index, bi));
                        frame.levels.push(Level { path, next: 0 });
                    }
                }
                Command::Action(call) => {
                    self.line = call.line;
                    let flow = self
                        .command(frame, call)
                        .map_err(|e| at(frame, call.line, e))?;
                    match flow {
                        Flow::Next => {}
                        Flow::Stop => return Ok(()),
                        Flow::Return => {
                            frames.pop();
                        }
                        Flow::Include { script, name } => {
                            if frames.len() > limits::INCLUDE_DEPTH {
                                return Err(format!("include of '{name}' nested too deeply"));
                            }
                            frames.push(Frame::new(script, name, true));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// An error message with where it happened (the included script, if not the top one).
fn at(frame: &Frame, line: u32, e: String) -> String {
    if frame.included {
        format!("{}: line {line}: {e}", frame.name)
    } else {
        format!("line {line}: {e}")
    }
}

fn level_path(frame: &Frame) -> Vec<(usize, usize)> {
    frame
        .levels
        .last()
        .map(|l| l.path.clone())
        .unwrap_or_default()
}
