"""Load-time checks for the embedded engine: constructs where rego-cpp would answer differently from OPA.

Each check exists because the differential suite (tests/differential, against the real OPA) found a
divergence that would otherwise change a decision silently; docs/policies.md lists them. The checks
work on tokens, not on a full Rego parser, so they are deliberately conservative: they refuse what
they can prove is wrong and say nothing about the rest.

Errors (the policy is refused, like OPA refuses it or would answer differently):
- only when no `opa` binary checked the policies first (opa_tool.check, which is exact): a name that
  is neither bound in the rule, nor a rule, import, keyword or built-in (OPA:
  `rego_unsafe_var_error`; rego-cpp makes the expression undefined, so `deny if x in blocked_usr`
  never fires), a rule body without `if` (Rego v0; OPA 1.x refuses it, rego-cpp gives v0
  partial sets v1 meaning), and a call result bound to a variable the rule never uses again
  (`x := to_number(s)`, `_ = f(y)`: rego-cpp lets the rule succeed when the call fails; with opa,
  embedded_ast.py finds these exactly from OPA's syntax tree);
- a call to an undotted function that is neither a built-in nor defined in the package;
- `in` whose result is used as a value (`blocked := user in data.blocklist`): rego-cpp yields false,
  so `allow if not blocked` lets a blocked user through;
- `\\u` and `\\/` escapes in string literals (rego-cpp compares them as written: "\\u00e9" != "é");
- regular-expression syntax rego-cpp's regex engine lacks or reads differently (inline flags such as
  `(?i)`, named groups, `\\p{..}`, `\\A`, `\\z`, `\\x..`): regex.match is then undefined or wrong.
Warnings (the policy loads; `iam-proxy check` prints them):
- `concat(...)` inside `sprintf(...)`: rego-cpp renders the joined string with stray quotes, the
  result is not valid JSON and the decision fails closed (denies) where OPA allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .source import PolicyProblem, PolicySource

KEYWORDS = frozenset({"package", "import", "as", "default", "if", "else", "contains", "some", "every", "in",
                      "not", "with", "true", "false", "null", "input", "data", "_"})
# Built-ins is_builtin() does not report although rego-cpp has them.
ALWAYS_KNOWN_FUNCTIONS = frozenset({"print", "set"})

_TOKEN = re.compile(r"""
    (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<raw>`[^`]*`)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>:=|==|!=|<=|>=|[-+*/%<>=|&:,;.()\[\]{}!])
  | (?P<newline>\n)
  | (?P<space>[ \t\r]+)
  | (?P<other>.)
""", re.X)

_REGEX_UNSUPPORTED = re.compile(r"\(\?(?!:)|\\[pP]|\\A|\\z|\\x")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    line: int
    depth: int  # bracket depth before this token
    line_start: bool  # first token on its line


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    line, depth, line_start = 1, 0, True
    for match in _TOKEN.finditer(text):
        kind, value = match.lastgroup or "other", match.group(0)
        if kind in ("space", "comment"):
            continue
        if kind == "newline":
            line, line_start = line + 1, True
            continue
        tokens.append(Token(kind, value, line, depth, line_start))
        line_start = False
        if kind == "raw":
            line += value.count("\n")
        if value in "([{" and kind == "op":
            depth += 1
        elif value in ")]}" and kind == "op":
            depth = max(0, depth - 1)
    return tokens


def _statements(tokens: list[Token]) -> list[list[Token]]:
    """Top-level statements: a rule with all its bodies and else branches, a package, an import."""
    statements: list[list[Token]] = []
    for token in tokens:
        starts = token.depth == 0 and token.line_start and token.text != "else" and token.kind == "ident"
        if starts or not statements:
            statements.append([])
        statements[-1].append(token)
    return statements


def _head_name(statement: list[Token]) -> str | None:
    first = statement[0]
    if first.text in ("package", "import"):
        return None
    if first.text == "default" and len(statement) > 1:
        return statement[1].text
    return first.text if first.kind == "ident" else None


def _aliases(statements: list[list[Token]]) -> set[str]:
    names: set[str] = set()
    for statement in statements:
        if statement[0].text != "import":
            continue
        texts = [t.text for t in statement]
        if "as" in texts:
            names.add(texts[texts.index("as") + 1])
        elif texts[1] in ("data", "input"):
            names.add(texts[-1])
    return names


def _bound_names(statement: list[Token]) -> set[str]:
    """Names a rule binds anywhere: params, `some`/`every`, `:=`/`=` sides, ref indexes, patterns."""
    bound: set[str] = set()
    texts = [t.text for t in statement]
    head_end = next((i for i, t in enumerate(statement) if t.text in ("if", ":=", "=", "contains")
                     or (t.text == "{" and t.depth == 0)), len(statement))
    # function parameters: name(a, b) in the head
    if head_end > 1 and texts[1] == "(":
        bound.update(t.text for t in statement[2:head_end] if t.kind == "ident")
    declaring = False
    for i, token in enumerate(statement):
        if token.text in ("some", "every"):
            declaring = True
            continue
        if declaring:
            if token.kind == "ident" and token.text != "in":
                bound.add(token.text)
                continue
            if token.text == ",":
                continue
            declaring = False
        if token.kind != "ident" or (i > 0 and statement[i - 1].text == "."):
            continue
        after = texts[i + 1] if i + 1 < len(texts) else ""
        before = texts[i - 1] if i > 0 else ""
        if after in (":=", "=") or before == "=":
            bound.add(token.text)
    # identifiers inside ref indexes (`xs[i]`) and inside patterns assigned or unified (`[a, _] := ...`)
    stack: list[tuple[int, bool]] = []
    for i, token in enumerate(statement):
        if token.text in ("[", "{", "(") and token.kind == "op":
            prev = statement[i - 1] if i > 0 else None
            is_index = token.text == "[" and prev is not None and (
                prev.kind in ("ident", "string") or prev.text in ("]", ")", "}"))
            stack.append((i, is_index))
        elif token.text in ("]", "}", ")") and token.kind == "op" and stack:
            start, is_index = stack.pop()
            after = texts[i + 1] if i + 1 < len(texts) else ""
            before = texts[start - 1] if start > 0 else ""
            if is_index or after in (":=", "=") or before == "=":
                bound.update(t.text for t in statement[start + 1:i] if t.kind == "ident")
    return bound


@dataclass
class LintResult:
    errors: list[PolicyProblem]
    warnings: list[PolicyProblem]


def lint(source: PolicySource, is_builtin: Callable[[str], bool], wrong_builtins: dict[str, str],
         opa_checked: bool = False) -> LintResult:
    """`wrong_builtins`: name -> why the engine's answer differs from OPA's (undotted ones are checked here,
    dotted ones by embedded.check_builtins). `opa_checked`: `opa check` accepted the policies, so
    unsafe variables are OPA's verdict, not this token scan's (which refuses some safe ones)."""
    errors: list[PolicyProblem] = []
    warnings: list[PolicyProblem] = []
    parsed = {file: _statements(tokenize(text)) for file, text in source.modules.items()}
    rules_by_package: dict[str, set[str]] = {}
    package_of: dict[str, str] = {}
    for file, statements in parsed.items():
        package = next((" ".join(t.text for t in s[1:]) for s in statements if s and s[0].text == "package"), "")
        package_of[file] = package
        names = rules_by_package.setdefault(package, set())
        names.update(n for s in statements if s and (n := _head_name(s)))
    for file, statements in parsed.items():
        known = KEYWORDS | rules_by_package[package_of[file]] | _aliases(statements)
        uses_regex = any(t.text == "regex" for s in statements for t in s)
        for statement in statements:
            if not statement or statement[0].text in ("package", "import"):
                continue
            errors.extend(_check_statement(file, statement, known, is_builtin, uses_regex, wrong_builtins,
                                           opa_checked))
            if not opa_checked:
                errors.extend(_unused_call_results(file, statement, known))
            warnings.extend(_warn_statement(file, statement))
    return LintResult(errors, warnings)


def _check_statement(file: str, statement: list[Token], known: set[str], is_builtin: Callable[[str], bool],
                     uses_regex: bool, wrong_builtins: dict[str, str], opa_checked: bool) -> list[PolicyProblem]:
    errors: list[PolicyProblem] = []
    bound = _bound_names(statement)
    reported: set[str] = set()
    for i, token in enumerate(statement):
        prev = statement[i - 1] if i > 0 else None
        after = statement[i + 1].text if i + 1 < len(statement) else ""
        if token.kind == "string" and re.search(r"\\[u/]", token.text):
            errors.append(PolicyProblem(file, token.line, "\\u or \\/ escape in a string literal: the embedded engine "
                                        "compares it as written; write the character itself"))
        if token.kind in ("string", "raw") and uses_regex and _REGEX_UNSUPPORTED.search(token.text):
            errors.append(PolicyProblem(file, token.line, "regular expression syntax the embedded engine lacks "
                                        "((?flags), named groups, \\p, \\A, \\z, \\x): regex built-ins would be "
                                        "undefined or wrong; use engine 'opa'"))
        if not opa_checked and token.text == "{" and token.kind == "op" and token.depth == 0 and prev is not None \
                and not any(t.text == "every" for t in statement[:i]) and (
                prev.kind in ("ident", "number", "string", "raw") or prev.text in ("]", ")")) \
                and prev.text not in ("if", "else", "contains", "in", "not", "some", "every"):
            errors.append(PolicyProblem(file, token.line, "`if` keyword is required before rule body (Rego v1; "
                                        "OPA 1.x refuses this too)"))
        if token.kind in ("number", "string", "raw") and _big_float(token.text):
            errors.append(PolicyProblem(file, token.line, "a number with a fraction or an exponent beyond ±2^53: "
                                        "the embedded engine computes it as a double where OPA keeps it exact; "
                                        "use engine 'opa'"))
        if token.text == "in" and _pair_membership(statement, i):
            errors.append(PolicyProblem(file, token.line, "`k, v in xs` as a test: the embedded engine answers "
                                        "undefined for sets; write `xs[k] == v` or use engine 'opa'"))
        if token.text == "in" and _membership_as_value(statement, i):
            errors.append(PolicyProblem(file, token.line, "`in` used as a value (x := a in b, {\"k\": a in b}): the "
                                        "embedded engine always yields false there; use it as a condition "
                                        "(b if a in s) or engine 'opa'"))
        if token.kind != "ident" or (prev is not None and prev.text == "."):
            continue
        name = token.text
        if after == "(" and name in wrong_builtins and name not in known:
            errors.append(PolicyProblem(file, token.line, f"built-in {name} is not reliable in the embedded engine "
                                        f"({wrong_builtins[name]}); use engine 'opa'"))
            continue
        if name in known or name in bound or name in reported:
            continue
        if after == "(":
            if name in ALWAYS_KNOWN_FUNCTIONS or is_builtin(name):
                continue
            message = f"unknown function {name}: not a rule, an import or a built-in the embedded engine has " \
                      "(OPA: undefined function)"
        elif after == "." and name in {"time", "regex", "glob", "strings", "object", "array", "io", "json",
                                       "crypto", "base64", "base64url", "urlquery", "units", "net", "http",
                                       "semver", "graph", "yaml", "uuid", "rand", "numbers", "bits", "hex",
                                       "opa", "rego", "providers", "graphql", "trace"}:
            continue  # a built-in namespace; embedded.check_builtins judges the call
        elif opa_checked:
            continue
        else:
            message = f"var {name} is unsafe: not bound in this rule and not a rule, import or keyword " \
                      "(OPA: rego_unsafe_var_error)"
        reported.add(name)
        errors.append(PolicyProblem(file, token.line, message))
    return errors


def _unused_call_results(file: str, statement: list[Token], known: set[str]) -> list[PolicyProblem]:
    """`x := f(..)`, `x = f(..)` and `f(..) = x` where the rule names x nowhere else (or x is `_`).
    Counted over the whole statement, so a name reused in an else branch or another body passes."""
    uses: dict[str, int] = {}
    for i, token in enumerate(statement):
        if token.kind == "ident" and not (i > 0 and statement[i - 1].text == "."):
            uses[token.text] = uses.get(token.text, 0) + 1
    problems = []
    rule = _head_name(statement) or "?"
    names = known - {"_"}  # rules, imports and keywords are not variables; `_` is one that is never used
    for i, token in enumerate(statement):
        if token.kind != "ident" or (i > 0 and statement[i - 1].text in (".", "[")) or token.text in names:
            continue
        after = statement[i + 1].text if i + 1 < len(statement) else ""
        if after in (":=", "="):
            call = _call_at(statement, i + 2)
        elif i > 1 and statement[i - 1].text == "=" and statement[i - 2].text == ")" and after not in (".", "[", "("):
            call = _call_ending_at(statement, i - 2)
        else:
            continue
        if call and (token.text == "_" or uses[token.text] == 1):
            problems.append(PolicyProblem(file, token.line, (
                f"rule {rule}: {token.text} takes the result of {call}(...) and is never used: when the call "
                "fails the embedded engine lets the rule succeed (OPA: undefined); use the value or drop it")))
    return problems


def _call_at(statement: list[Token], start: int) -> str | None:
    """The function name of a call `a.b.c(` starting at `start`, if the expression there is one."""
    i, name = start, []
    while i + 1 < len(statement) and statement[i].kind == "ident":
        name.append(statement[i].text)
        if statement[i + 1].text == "(":
            return ".".join(name)
        if statement[i + 1].text != ".":
            return None
        i += 2
    return None


def _call_ending_at(statement: list[Token], close: int) -> str | None:
    """The function name of the call whose `)` is at `close`, if that parenthesis closes a call."""
    depth = 0
    for i in range(close, -1, -1):
        depth += {")": 1, "(": -1}.get(statement[i].text, 0) if statement[i].kind == "op" else 0
        if depth == 0:
            start = i - 1
            while start >= 2 and statement[start - 1].text == "." and statement[start - 2].kind == "ident":
                start -= 2
            return _call_at(statement, start) if start >= 0 and statement[start].kind == "ident" else None
    return None


# written as a float (fraction or exponent): integers of any size are exact in rego-cpp too
_FLOAT = re.compile(r"(?<![\w.])\d+(?:\.\d+[eE][+-]?\d+|\.\d+|[eE][+-]?\d+)")


def _big_float(text: str) -> bool:
    return any(abs(float(m.group(0))) >= 2 ** 53 for m in _FLOAT.finditer(text))


def _pair_membership(statement: list[Token], index: int) -> bool:
    """`a, b in xs` used as a test: a comma before the operand, and no `some`/`every` declaring it."""
    depth = statement[index].depth
    if index < 2 or statement[index - 2].text != "," or statement[index - 2].depth != depth:
        return False
    for token in reversed(statement[:index]):
        if token.depth < depth:
            return token.text == "{"  # a body; other brackets hold arguments or elements
        if token.depth > depth:
            continue
        if token.text in ("some", "every"):
            return False
        if token.line_start or token.text in (";", "if", "not"):
            return True
    return True


def _membership_as_value(statement: list[Token], index: int) -> bool:
    """Whether the `in` at `index` is a membership test whose result is used as a value.

    As a condition (a body line, after `if`, `not`, `;` or `|`) rego-cpp gets it right; as a value
    (after `:=` or `=`, as an object value, an array element or a call argument) it yields false.
    """
    depth = statement[index].depth
    for j in range(index - 1, -1, -1):
        token = statement[j]
        if token.depth > depth:
            continue
        if token.depth < depth:  # the bracket that encloses the expression
            before = statement[j - 1] if j > 0 else None
            is_body = token.text == "{" and before is not None and (
                before.text in ("if", "else") or before.kind == "ident" or before.text in ("]", ")"))
            return not is_body
        if token.text in ("some", "every"):
            return False  # a declaration (some x in xs), not a test
        if token.text in ("if", "not", ";", "|", "else"):
            return False
        if token.text in (":=", "=", ":"):
            return True
        if token.line_start:
            return False
    return False


def _warn_statement(file: str, statement: list[Token]) -> list[PolicyProblem]:
    warnings: list[PolicyProblem] = []
    for i, token in enumerate(statement):
        if token.text != "sprintf" or i + 1 >= len(statement) or statement[i + 1].text != "(":
            continue
        depth = statement[i + 1].depth
        for inner in statement[i + 2:]:
            if inner.depth <= depth:
                break
            if inner.text == "concat":
                warnings.append(PolicyProblem(file, inner.line, "concat(...) inside sprintf(...): the embedded "
                                              "engine renders it with stray quotes and the decision fails closed "
                                              "(denies); build the string with sprintf alone"))
                break
    return warnings


def embedded_warnings(modules: dict[str, str]) -> list[PolicyProblem]:
    """The warnings for `iam-proxy check`: constructs that load but fail closed in the embedded engine."""
    from regopy import Interpreter

    interpreter = Interpreter()
    return lint(PolicySource(modules, {}, "", ()), interpreter.is_builtin, {}).warnings
