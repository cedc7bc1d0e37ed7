//! Where recipes come from: `./recipes/` in the directory agent runs in,
//! then the config directory's `recipes/`, then the recipes built into the
//! binary (the repository's `recipes/` folder). A recipe's name is its
//! file name without `.yaml`/`.yml`/`.json`; the first on the path wins.

use std::path::{Path, PathBuf};

use super::RecipeError;
use super::format::{Recipe, SubRecipe};

/// The recipes shipped with agent, by name (the repository's `recipes/`).
const BUILTIN: &[(&str, &str)] = &[
    (
        "summarize-folder",
        include_str!("../../recipes/summarize-folder.yaml"),
    ),
    (
        "csv-summary",
        include_str!("../../recipes/csv-summary.yaml"),
    ),
    (
        "research-note",
        include_str!("../../recipes/research-note.yaml"),
    ),
    (
        "python-function",
        include_str!("../../recipes/python-function.yaml"),
    ),
    ("classify", include_str!("../../recipes/classify.yaml")),
];

/// Where a recipe was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `./recipes/`.
    Project,
    /// The config directory's `recipes/`.
    User,
    /// Built into agent.
    Builtin,
    /// A path given on the command line.
    Path,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Project => "project",
            Source::User => "user",
            Source::Builtin => "builtin",
            Source::Path => "path",
        }
    }
}

/// A recipe read and checked, with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub source: Source,
    /// The file (none for a built-in recipe).
    pub path: Option<PathBuf>,
    pub recipe: Recipe,
}

impl Loaded {
    /// How a run records where its recipe is: the file's path, or
    /// `builtin:NAME`.
    pub fn location(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => format!("builtin:{}", self.name),
        }
    }

    /// The tool name a recipe is offered under (`recipe_NAME`, `-` as `_`).
    pub fn tool_name(&self) -> String {
        format!("recipe_{}", self.name.replace(['-', '.', ' '], "_")).to_ascii_lowercase()
    }
}

/// One entry of [`Library::list`]: a recipe that loads, or why it does not.
pub struct Listed {
    pub name: String,
    pub source: Source,
    pub path: Option<PathBuf>,
    pub recipe: Result<Recipe, RecipeError>,
}

impl Listed {
    /// The recipe, loaded, or why it does not load.
    pub fn into_loaded(self) -> Result<Loaded, RecipeError> {
        Ok(Loaded {
            recipe: self.recipe?,
            name: self.name,
            source: self.source,
            path: self.path,
        })
    }
}

/// The search path.
#[derive(Debug, Clone)]
pub struct Library {
    dirs: Vec<(Source, PathBuf)>,
}

const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

impl Library {
    /// `project/recipes`, then `config_dir/recipes`, then the built-ins.
    pub fn new(project: &Path, config_dir: &Path) -> Self {
        Self {
            dirs: vec![
                (Source::Project, project.join("recipes")),
                (Source::User, config_dir.join("recipes")),
            ],
        }
    }

    /// The user's recipes directory (where `agent recipe new` writes).
    pub fn user_dir(&self) -> &Path {
        &self.dirs[1].1
    }

    /// Every recipe on the path, first occurrence of each name, sorted by
    /// name. A file whose text is a built-in's is listed as built-in.
    pub fn list(&self) -> Vec<Listed> {
        let mut out = self.on_disk();
        for (name, text) in BUILTIN {
            if !out.iter().any(|l| l.name == *name) {
                out.push(Listed {
                    name: name.to_string(),
                    source: Source::Builtin,
                    path: None,
                    recipe: Recipe::parse(text, &format!("builtin:{name}")),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The user's own recipes: those in the search path's folders that are
    /// not copies of a built-in one (what runs are offered as tools).
    pub fn own(&self) -> Vec<Listed> {
        let mut out = self.on_disk();
        out.retain(|l| l.source != Source::Builtin);
        out
    }

    /// The recipes in the search path's folders, first occurrence of each
    /// name.
    fn on_disk(&self) -> Vec<Listed> {
        let mut out: Vec<Listed> = Vec::new();
        for (source, dir) in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && has_recipe_extension(p))
                .collect();
            files.sort();
            for path in files {
                let Some(name) = stem(&path) else { continue };
                if out.iter().any(|l| l.name == name) {
                    continue;
                }
                let text = std::fs::read_to_string(&path);
                let builtin = text
                    .as_ref()
                    .ok()
                    .is_some_and(|t| BUILTIN.iter().any(|(n, b)| *n == name && b == t));
                let recipe = text
                    .map_err(|e| RecipeError::Read {
                        path: path.clone(),
                        source: e,
                    })
                    .and_then(|t| Recipe::parse(&t, &path.display().to_string()));
                out.push(Listed {
                    name,
                    source: if builtin { Source::Builtin } else { *source },
                    path: Some(path),
                    recipe,
                });
            }
        }
        out
    }

    /// The recipe `what` names: a path to a file, `builtin:NAME`, or a
    /// name on the search path.
    pub fn load(&self, what: &str) -> Result<Loaded, RecipeError> {
        if let Some(name) = what.strip_prefix("builtin:") {
            return builtin(name).ok_or_else(|| self.not_found(what));
        }
        let as_path = Path::new(what);
        if what.contains('/') || what.contains('\\') || has_recipe_extension(as_path) {
            if !as_path.is_file() {
                return Err(RecipeError::NotFound {
                    what: what.to_string(),
                    known: "no such file".into(),
                });
            }
            return load_file(as_path, Source::Path);
        }
        for (source, dir) in &self.dirs {
            for ext in EXTENSIONS {
                let path = dir.join(format!("{what}.{ext}"));
                if path.is_file() {
                    return load_file(&path, *source);
                }
            }
        }
        builtin(what).ok_or_else(|| self.not_found(what))
    }

    /// The recipe a `sub` entry of `parent` names: its path is relative to
    /// the parent's file (a built-in parent's sub-recipes are built-ins).
    pub fn load_sub(&self, parent: &Loaded, sub: &SubRecipe) -> Result<Loaded, RecipeError> {
        let path = Path::new(&sub.path);
        let loaded = match &parent.path {
            Some(file) if !path.is_absolute() => {
                let base = file.parent().unwrap_or(Path::new("."));
                load_file(&base.join(path), Source::Path)
            }
            Some(_) => load_file(path, Source::Path),
            None => stem(path)
                .and_then(|n| builtin(&n))
                .ok_or_else(|| self.not_found(&sub.path)),
        };
        loaded.map_err(|e| RecipeError::Sub {
            name: sub.name.clone(),
            detail: e.to_string(),
        })
    }

    fn not_found(&self, what: &str) -> RecipeError {
        let names: Vec<String> = self.list().into_iter().map(|l| l.name).collect();
        RecipeError::NotFound {
            what: what.to_string(),
            known: format!("known recipes: {}", names.join(", ")),
        }
    }
}

fn builtin(name: &str) -> Option<Loaded> {
    let (name, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
    // A built-in recipe is checked by the tests; a broken one is a bug
    // reported as not found rather than a panic.
    let recipe = Recipe::parse(text, &format!("builtin:{name}")).ok()?;
    Some(Loaded {
        name: name.to_string(),
        source: Source::Builtin,
        path: None,
        recipe,
    })
}

fn load_file(path: &Path, source: Source) -> Result<Loaded, RecipeError> {
    // Absolute, so that a run records where its recipe is for a resume
    // from another directory.
    let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string(path).map_err(|e| RecipeError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    let recipe = Recipe::parse(&text, &path.display().to_string())?;
    Ok(Loaded {
        name: stem(path).unwrap_or_else(|| "recipe".into()),
        source,
        path: Some(path.to_path_buf()),
        recipe,
    })
}

fn has_recipe_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e))
}

fn stem(path: &Path) -> Option<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string)
}

/// The commented template `agent recipe new NAME` writes.
pub fn template(name: &str) -> String {
    format!(
        r#"# {name}: a recipe for agent (`agent recipe run {name} --param topic=...`).
# Keys follow goose's recipe format where they fit; `agent recipe validate`
# checks it. Templates are minijinja: {{{{ name }}}} for a parameter.
version: "1.0.0"
title: "{name}"
description: "What this recipe does, in a sentence (shown by `agent recipe list`)."

# kind: agent (a whole agent run, the default) or chain (see below).
kind: agent

# The system-side part: how to go about it.
instructions: |
  Work in the workspace. Keep the note short and factual.

# The request the agent works toward.
prompt: |
  Write a short note about {{{{ topic }}}} to {{{{ output }}}}, then read it back.

# input_type: string | number | boolean | date | file | select
# requirement: required | optional (needs a default) | user_prompt (asked in the REPL)
parameters:
  - key: topic
    input_type: string
    requirement: required
    description: What the note is about
  - key: output
    input_type: string
    requirement: optional
    default: note.md
    description: Where to write it

# settings:
#   model: smart           # a model reference, or a role: default, smart, fast
#   temperature: 0.2
#   max_steps: 12
#   agent: react           # or plan

# The plugins (or single tools) the run may use; never more than the config allows.
plugins: [files]

# The final answer as data (`agent recipe run --json` prints it):
# response:
#   json_schema:
#     type: object
#     properties: {{summary: {{type: string}}}}
#     required: [summary]

# Checks after the run; a failure retries it with a fresh history and the
# failed checks told. Checks never run on the host shell.
retry:
  max_retries: 1
  checks:
    - type: file
      path: "{{{{ output }}}}"
      matches: '\S'
#   - type: python          # in the code plugin's sandbox, in the workspace
#     code: "assert 'topic' in open('note.md').read()"

# Other recipes this one may call as tools (values pinned here win):
# sub_recipes:
#   - name: summarize
#     path: ./summarize.yaml
#     values: {{style: short}}

# A chain (kind: chain) has steps instead of a prompt: each step's output is
# bound to its name for later steps.
# steps:
#   - name: facts
#     prompt: "List three facts about {{{{ topic }}}}."
#   - name: verdict
#     prompt: "Facts: {{{{ facts }}}}. Is {{{{ topic }}}} old? Answer as JSON."
#     output: {{json_schema: {{type: object, properties: {{old: {{type: boolean}}}}, required: [old]}}}}
#     samples: 3
#     select: vote          # or judge
"#
    )
}
