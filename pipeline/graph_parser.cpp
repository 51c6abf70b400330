// Lexer and recursive-descent parser of the graph language (see README.md,
// "Writing a graph"). Every syntax error is recorded with its place and the
// parser resynchronises at the next statement, so a file reports all of them.
#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "pipeline/graph_spec.h"

namespace flowrun {
namespace {

enum class Tok { Ident, Int, Float, String, Newline, Semi, Eq, Pipe, Plus, Dot, Arrow, LBrack, RBrack, Comma, LBrace, RBrace, End };

const char* describe(Tok tok) {
  switch (tok) {
    case Tok::Ident: return "a name";
    case Tok::Int: return "an integer";
    case Tok::Float: return "a number";
    case Tok::String: return "a string";
    case Tok::Newline: return "end of line";
    case Tok::Semi: return "';'";
    case Tok::Eq: return "'='";
    case Tok::Pipe: return "'|'";
    case Tok::Plus: return "'+'";
    case Tok::Dot: return "'.'";
    case Tok::Arrow: return "'->'";
    case Tok::LBrack: return "'['";
    case Tok::RBrack: return "']'";
    case Tok::Comma: return "','";
    case Tok::LBrace: return "'{'";
    case Tok::RBrace: return "'}'";
    case Tok::End: return "end of file";
  }
  return "?";
}

struct Token {
  Tok kind;
  std::string text;
  Location where;
  int64_t int_value = 0;
  double float_value = 0;
};

class Lexer {
 public:
  Lexer(const std::string& text, const std::string& file, Diagnostics& diagnostics)
      : text_(text), file_(file), diagnostics_(diagnostics) {}

  std::vector<Token> run() {
    std::vector<Token> tokens;
    while (true) {
      skip_blanks_and_comments();
      Location here = location();
      if (pos_ >= text_.size()) {
        tokens.push_back({Tok::End, "", here});
        return tokens;
      }
      char c = text_[pos_];
      if (c == '\n') { advance(); tokens.push_back({Tok::Newline, "\\n", here}); continue; }
      if (c == '\\' && peek(1) == '\n') { advance(); advance(); continue; }  // line continuation
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') { tokens.push_back(identifier(here)); continue; }
      if (std::isdigit(static_cast<unsigned char>(c)) ||
          ((c == '-' || c == '+') && (std::isdigit(static_cast<unsigned char>(peek(1))) || peek(1) == '.'))) {
        tokens.push_back(number(here));
        continue;
      }
      if (c == '"') { tokens.push_back(string(here)); continue; }
      if (c == '-' && peek(1) == '>') { advance(); advance(); tokens.push_back({Tok::Arrow, "->", here}); continue; }
      Tok punct;
      switch (c) {
        case ';': punct = Tok::Semi; break;
        case '=': punct = Tok::Eq; break;
        case '|': punct = Tok::Pipe; break;
        case '+': punct = Tok::Plus; break;
        case '.': punct = Tok::Dot; break;
        case '[': punct = Tok::LBrack; break;
        case ']': punct = Tok::RBrack; break;
        case ',': punct = Tok::Comma; break;
        case '{': punct = Tok::LBrace; break;
        case '}': punct = Tok::RBrace; break;
        default: {
          std::string shown = std::isprint(static_cast<unsigned char>(c)) ? std::string(1, c)
                                                                         : "\\x" + hex(static_cast<unsigned char>(c));
          diagnostics_.error(here, "unexpected character '" + shown + "'");
          advance();
          continue;
        }
      }
      advance();
      tokens.push_back({punct, std::string(1, c), here});
    }
  }

 private:
  static std::string hex(unsigned char c) {
    const char* digits = "0123456789abcdef";
    return {digits[c >> 4], digits[c & 15]};
  }
  char peek(size_t ahead) const { return pos_ + ahead < text_.size() ? text_[pos_ + ahead] : '\0'; }
  Location location() const { return {file_, line_, col_}; }
  void advance() {
    if (text_[pos_] == '\n') { ++line_; col_ = 1; } else { ++col_; }
    ++pos_;
  }
  void skip_blanks_and_comments() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == ' ' || c == '\t' || c == '\r') advance();
      else if (c == '#') { while (pos_ < text_.size() && text_[pos_] != '\n') advance(); }
      else break;
    }
  }
  Token identifier(const Location& here) {
    size_t start = pos_;
    while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_')) advance();
    return {Tok::Ident, text_.substr(start, pos_ - start), here};
  }
  Token number(const Location& here) {
    size_t start = pos_;
    bool is_float = false;
    if (text_[pos_] == '-' || text_[pos_] == '+') advance();
    auto digits = [&] { while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) advance(); };
    digits();
    if (pos_ < text_.size() && text_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(peek(1)))) {
      is_float = true;
      advance();
      digits();
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E') &&
        (std::isdigit(static_cast<unsigned char>(peek(1))) ||
         ((peek(1) == '-' || peek(1) == '+') && std::isdigit(static_cast<unsigned char>(peek(2)))))) {
      is_float = true;
      advance();
      if (text_[pos_] == '-' || text_[pos_] == '+') advance();
      digits();
    }
    // "64px" or "1.2.3": letters or dots glued to a number are a mistake.
    bool glued = false;
    while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_' ||
                                   (text_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(peek(1)))))) {
      glued = true;
      advance();
    }
    std::string text = text_.substr(start, pos_ - start);
    Token token{is_float ? Tok::Float : Tok::Int, text, here};
    if (glued) {
      diagnostics_.error(here, "malformed number '" + text + "'");
      return token;
    }
    try {
      if (is_float) token.float_value = std::stod(text);
      else token.int_value = std::stoll(text);
    } catch (const std::exception&) {
      diagnostics_.error(here, "number '" + text + "' is out of range");
    }
    return token;
  }
  Token string(const Location& here) {
    advance();  // opening quote
    std::string value;
    while (true) {
      if (pos_ >= text_.size() || text_[pos_] == '\n') {
        diagnostics_.error(here, "unterminated string (missing closing '\"')");
        return {Tok::String, value, here};
      }
      char c = text_[pos_];
      if (c == '"') { advance(); return {Tok::String, value, here}; }
      if (c == '\\') {
        Location escape_at = location();
        advance();
        char e = pos_ < text_.size() ? text_[pos_] : '\0';
        switch (e) {
          case '"': value += '"'; break;
          case '\\': value += '\\'; break;
          case 'n': value += '\n'; break;
          case 't': value += '\t'; break;
          default:
            diagnostics_.error(escape_at, "unknown escape '\\" + std::string(1, e) + "' in string");
            if (e == '\n' || e == '\0') continue;
        }
        advance();
        continue;
      }
      value += c;
      advance();
    }
  }

  const std::string& text_;
  const std::string& file_;
  Diagnostics& diagnostics_;
  size_t pos_ = 0;
  int line_ = 1, col_ = 1;
};

class Parser {
 public:
  Parser(std::vector<Token> tokens, Diagnostics& diagnostics) : tokens_(std::move(tokens)), diagnostics_(diagnostics) {}

  void parse_file(GraphSpec& graph) {
    while (!at(Tok::End)) {
      if (accept(Tok::Newline) || accept(Tok::Semi)) continue;
      if (at(Tok::RBrace) || at(Tok::RBrack)) {
        error(current(), std::string("unmatched ") + describe(current().kind));
        next();
        continue;
      }
      if (!at(Tok::Ident)) {
        error(current(), std::string("expected a statement (a stage, flow, phase, copy, plugin or run line) but found ") +
                             describe(current().kind));
        skip_statement();
        continue;
      }
      const std::string& word = current().text;
      bool keyword_position = !next_is(Tok::Eq) && !next_is(Tok::Dot);
      bool ok = true;
      if (keyword_position && word == "plugin") ok = parse_plugin(graph);
      else if (keyword_position && word == "run") ok = parse_settings_line(graph.run_settings);
      else if (keyword_position && word == "flow") ok = parse_flow(graph);
      else if (keyword_position && word == "phase") ok = parse_phase(graph);
      else if (keyword_position && word == "copy") ok = parse_copy(graph);
      else {
        StageDecl stage;
        ok = parse_stage(stage);
        if (ok) graph.stages.push_back(std::move(stage));
      }
      if (ok) ok = expect_statement_end(false);
      if (!ok) skip_statement();
    }
  }

  bool parse_override_line(ParamOverride& out) {
    bool ok = parse_override(out);
    if (ok && !at(Tok::End)) {
      error(current(), std::string("expected end of input after the value but found ") + found());
      ok = false;
    }
    return ok;
  }

 private:
  const Token& current() const { return tokens_[pos_]; }
  // What an error found: "end of file" in a graph file, "the end of the
  // text" in a --set (the text given on the command line).
  std::string found() const {
    const Token& token = current();
    if (token.kind == Tok::End && token.where.file.rfind("--", 0) == 0) return "the end of the text";
    return describe(token.kind);
  }
  bool at(Tok kind) const { return current().kind == kind; }
  bool next_is(Tok kind) const { return pos_ + 1 < tokens_.size() && tokens_[pos_ + 1].kind == kind; }
  void next() { if (!at(Tok::End)) ++pos_; }
  bool accept(Tok kind) {
    if (!at(kind)) return false;
    next();
    return true;
  }
  void error(const Token& token, std::string message) { diagnostics_.error(token.where, std::move(message)); }
  bool expect(Tok kind, const std::string& context) {
    if (accept(kind)) return true;
    error(current(), std::string("expected ") + describe(kind) + " " + context + " but found " + found());
    return false;
  }
  void skip_newlines() { while (at(Tok::Newline)) next(); }
  // After an error: skip to the end of the statement (not past a '}' that closes a phase).
  void skip_statement() {
    while (!at(Tok::End) && !at(Tok::Newline) && !at(Tok::Semi) && !at(Tok::RBrace)) next();
  }
  bool expect_statement_end(bool in_phase) {
    if (at(Tok::Newline) || at(Tok::Semi) || at(Tok::End) || (in_phase && at(Tok::RBrace))) return true;
    error(current(), std::string("expected end of statement but found ") + found());
    return false;
  }

  bool parse_plugin(GraphSpec& graph) {
    next();  // plugin
    if (!at(Tok::String)) {
      error(current(), "expected a quoted path after 'plugin'");
      return false;
    }
    graph.plugins.push_back({current().text, current().where});
    next();
    return true;
  }

  bool parse_settings_line(std::vector<ParamAssign>& settings) {
    next();  // run
    return parse_assignments(settings);
  }

  bool parse_assignments(std::vector<ParamAssign>& out) {
    while (at(Tok::Ident)) {
      ParamAssign assign;
      assign.name = current().text;
      assign.where = current().where;
      next();
      if (!expect(Tok::Eq, "after parameter '" + assign.name + "'")) return false;
      if (!parse_value(assign.value)) return false;
      out.push_back(std::move(assign));
    }
    return true;
  }

  bool parse_flow(GraphSpec& graph) {
    next();  // flow
    FlowDecl flow;
    do {
      skip_newlines_after_arrow(flow);
      if (!at(Tok::Ident)) {
        error(current(), std::string("expected a stage name in flow but found ") + found());
        return false;
      }
      flow.names.push_back(current().text);
      flow.where.push_back(current().where);
      next();
      // `flow source + target -> ...`: sources joined to the first.
      while (flow.names.size() == 1 && accept(Tok::Plus)) {
        if (!at(Tok::Ident)) {
          error(current(), std::string("expected a source stage to join after '+' but found ") + found());
          return false;
        }
        flow.joined.push_back(current().text);
        flow.joined_where.push_back(current().where);
        next();
      }
      if (at(Tok::Plus)) {
        error(current(), "only a flow's first stage joins sources with '+' ('flow source + target -> ...')");
        return false;
      }
    } while (accept(Tok::Arrow));
    if (flow.names.size() < 2) {
      error(tokens_[pos_ - 1], "a flow links at least two stages: 'flow a -> b'");
      return false;
    }
    graph.flows.push_back(std::move(flow));
    return true;
  }
  void skip_newlines_after_arrow(const FlowDecl& flow) {
    if (!flow.names.empty()) skip_newlines();
  }

  bool parse_stage(StageDecl& stage) {
    stage.name = current().text;
    stage.where = current().where;
    next();
    if (!expect(Tok::Eq, "after stage name '" + stage.name + "'")) return false;
    if (at(Tok::Ident) && current().text == "like" && next_is(Tok::Ident)) {
      next();  // like
      stage.like = current().text;
      stage.like_where = current().where;
      next();
      while (at(Tok::Ident) || at(Tok::Int)) {
        ParamOverride change;
        if (!parse_path_value(change, "'param = value' or 'op.param = value'")) return false;
        stage.changes.push_back(std::move(change));
      }
      return true;
    }
    do {
      skip_newlines_if(!stage.ops.empty());
      if (!at(Tok::Ident)) {
        error(current(), std::string("expected a stage type but found ") + found());
        return false;
      }
      OpDecl op;
      op.type = current().text;
      op.where = current().where;
      next();
      if (!parse_assignments(op.params)) return false;
      stage.ops.push_back(std::move(op));
    } while (accept(Tok::Pipe));
    return true;
  }
  void skip_newlines_if(bool condition) {
    if (condition) skip_newlines();
  }

  bool parse_phase(GraphSpec& graph) {
    next();  // phase
    PhaseDecl phase;
    if (!at(Tok::Ident)) {
      error(current(), "expected a phase name after 'phase'");
      skip_block();
      return false;
    }
    phase.name = current().text;
    phase.where = current().where;
    next();
    if (!parse_assignments(phase.settings)) {
      skip_block();
      return false;
    }
    skip_newlines();
    if (!at(Tok::LBrace)) {
      error(current(), "expected '{' to open phase '" + phase.name + "'");
      return false;
    }
    Token open = current();
    next();
    while (true) {
      if (accept(Tok::Newline) || accept(Tok::Semi)) continue;
      if (at(Tok::End)) {
        error(open, "unclosed '{' of phase '" + phase.name + "' (missing '}')");
        graph.phases.push_back(std::move(phase));
        return true;
      }
      if (accept(Tok::RBrace)) break;
      bool ok = at(Tok::Ident);
      if (!ok) {
        error(current(), std::string("expected a stage or 'stage.param = value' in phase but found ") +
                             describe(current().kind));
      } else if (next_is(Tok::Dot)) {
        ParamOverride override_;
        ok = parse_override(override_);
        if (ok) phase.overrides.push_back(std::move(override_));
      } else {
        StageDecl stage;
        ok = parse_stage(stage);
        if (ok) phase.stages.push_back(std::move(stage));
      }
      if (ok) ok = expect_statement_end(true);
      if (!ok) skip_statement();
    }
    graph.phases.push_back(std::move(phase));
    return true;
  }
  // copy SOURCE... as PREFIX [{ STAGE.PARAM = VALUE ... }]
  bool parse_copy(GraphSpec& graph) {
    CopyDecl copy;
    copy.where = current().where;
    next();  // copy
    while (at(Tok::Ident) && current().text != "as") {
      copy.sources.push_back(current().text);
      copy.sources_where.push_back(current().where);
      next();
    }
    if (copy.sources.empty()) {
      error(current(), std::string("expected the source stage of a flow to copy but found ") + found());
      return false;
    }
    if (!at(Tok::Ident) || current().text != "as") {
      error(current(), std::string("expected 'as PREFIX' after the flows to copy but found ") + found());
      return false;
    }
    next();  // as
    if (!at(Tok::Ident)) {
      error(current(), "expected the prefix of the copies' names after 'as'");
      return false;
    }
    copy.prefix = current().text;
    copy.prefix_where = current().where;
    next();
    const size_t before_block = pos_;
    skip_newlines();  // the block may open on the next line
    if (!at(Tok::LBrace)) pos_ = before_block;
    if (at(Tok::LBrace)) {
      Token open = current();
      next();
      while (true) {
        if (accept(Tok::Newline) || accept(Tok::Semi)) continue;
        if (at(Tok::End)) {
          error(open, "unclosed '{' of copy (missing '}')");
          break;
        }
        if (accept(Tok::RBrace)) break;
        bool ok = at(Tok::Ident);
        if (!ok) {
          error(current(), std::string("expected 'stage.param = value' in copy but found ") + found());
        } else {
          ParamOverride change;
          ok = parse_override(change);
          if (ok) copy.changes.push_back(std::move(change));
        }
        if (ok) ok = expect_statement_end(true);
        if (!ok) skip_statement();
      }
    }
    graph.copies.push_back(std::move(copy));
    return true;
  }

  // PATH = VALUE, the path's parts names or op indexes joined by '.'.
  bool parse_path_value(ParamOverride& out, const std::string& expected) {
    do {
      if (!at(Tok::Ident) && !at(Tok::Int)) {
        error(current(), "expected " + expected + " but found " + found());
        return false;
      }
      out.path.push_back(current().text);
      out.path_where.push_back(current().where);
      next();
    } while (accept(Tok::Dot));
    if (!expect(Tok::Eq, "after '" + join(out.path) + "'")) return false;
    return parse_value(out.value);
  }

  // A broken phase header: skip its block too, so its contents are not read as top-level lines.
  void skip_block() {
    while (!at(Tok::End) && !at(Tok::LBrace) && !at(Tok::Newline)) next();
    skip_newlines();
    if (!at(Tok::LBrace)) return;
    int depth = 0;
    do {
      if (at(Tok::LBrace)) ++depth;
      if (at(Tok::RBrace)) --depth;
      next();
    } while (depth > 0 && !at(Tok::End));
  }

  bool parse_override(ParamOverride& out) {
    out.path.push_back(current().text);
    out.path_where.push_back(current().where);
    next();
    while (accept(Tok::Dot)) {
      if (!at(Tok::Ident) && !at(Tok::Int)) {
        error(current(), "expected a name after '.'");
        return false;
      }
      out.path.push_back(current().text);
      out.path_where.push_back(current().where);
      next();
    }
    if (out.path.size() < 2) {
      error(tokens_[pos_ - 1], "expected 'stage.param = value'");
      return false;
    }
    if (!expect(Tok::Eq, "after '" + join(out.path) + "'")) return false;
    return parse_value(out.value);
  }
  static std::string join(const std::vector<std::string>& parts) {
    std::string text;
    for (size_t i = 0; i < parts.size(); ++i) text += (i ? "." : "") + parts[i];
    return text;
  }

  bool parse_value(RawValue& value) {
    const Token& token = current();
    value.where = token.where;
    value.text = token.text;
    switch (token.kind) {
      case Tok::Int: value.kind = RawValue::Kind::Int; value.int_value = token.int_value; next(); return true;
      case Tok::Float: value.kind = RawValue::Kind::Float; value.float_value = token.float_value; next(); return true;
      case Tok::String: value.kind = RawValue::Kind::String; next(); return true;
      case Tok::Ident: value.kind = RawValue::Kind::Word; next(); return true;
      case Tok::LBrack: return parse_list(value);
      default:
        error(token, std::string("expected a value but found ") + describe(token.kind));
        return false;
    }
  }

  bool parse_list(RawValue& value) {
    Token open = current();
    value.kind = RawValue::Kind::List;
    next();
    skip_newlines();
    if (accept(Tok::RBrack)) return true;
    while (true) {
      skip_newlines();
      if (at(Tok::End) || at(Tok::RBrace) || at(Tok::Semi)) {
        error(open, "unclosed '[' (missing ']')");
        return false;
      }
      if (at(Tok::LBrack)) {
        error(current(), "lists cannot be nested");
        return false;
      }
      RawValue item;
      if (!parse_value(item)) return false;
      value.items.push_back(std::move(item));
      skip_newlines();
      if (accept(Tok::RBrack)) return true;
      if (at(Tok::End) || at(Tok::RBrace) || at(Tok::Semi)) {
        error(open, "unclosed '[' (missing ']')");
        return false;
      }
      if (!expect(Tok::Comma, "between list items")) return false;
    }
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  Diagnostics& diagnostics_;
};

std::string directory_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

GraphSpec parse_graph(const std::string& text, const std::string& file, Diagnostics& diagnostics) {
  GraphSpec graph;
  graph.file = file;
  Lexer lexer(text, file, diagnostics);
  Parser parser(lexer.run(), diagnostics);
  parser.parse_file(graph);
  // Plugin paths are relative to the graph file; bare file names are looked
  // up on the plugin search path by the loader.
  for (auto& plugin : graph.plugins)
    if (plugin.path.find('/') != std::string::npos && plugin.path[0] != '/')
      plugin.path = directory_of(file) + "/" + plugin.path;
  return graph;
}

GraphSpec parse_graph_file(const std::string& path, Diagnostics& diagnostics) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    diagnostics.error({path, 0, 0}, "cannot read graph file");
    GraphSpec empty;
    empty.file = path;
    return empty;
  }
  std::ostringstream text;
  text << in.rdbuf();
  // A binary file (a weights file, the program itself) would give an error
  // for nearly every byte: one error says what it is instead.
  const std::string bytes = text.str();
  if (const size_t nul = bytes.find('\0'); nul != std::string::npos) {
    const int line = 1 + static_cast<int>(std::count(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(nul), '\n'));
    const size_t newline = bytes.rfind('\n', nul);
    const size_t line_start = newline == std::string::npos ? 0 : newline + 1;
    diagnostics.error({path, line, static_cast<int>(nul - line_start) + 1},
                      "not a graph: a binary file (a NUL byte); a graph is a text file of stage declarations "
                      "(README: Writing a graph)");
    GraphSpec empty;
    empty.file = path;
    return empty;
  }
  return parse_graph(bytes, path, diagnostics);
}

bool parse_override(const std::string& text, const std::string& origin, ParamOverride& out, Diagnostics& diagnostics) {
  out = ParamOverride{};
  size_t before = diagnostics.size();
  if (text.find('\n') != std::string::npos) {
    diagnostics.error({origin, 1, static_cast<int>(text.find('\n')) + 1}, "a --set value is one line");
    return false;
  }
  // On the command line an unquoted value that is not one number or word is
  // taken as it stands, so `--set source.root=/data/train` needs no quotes.
  size_t eq = text.find('=');
  bool raw_value = false;
  if (eq != std::string::npos && eq + 1 == text.size()) {
    raw_value = true;  // `--set stage.path=`: the empty string
  } else if (eq != std::string::npos && text[eq + 1] != '"' && text[eq + 1] != '[') {
    Diagnostics scratch;
    std::string value_text = text.substr(eq + 1);
    std::vector<Token> value_tokens = Lexer(value_text, origin, scratch).run();
    Tok kind = value_tokens.front().kind;
    raw_value = !scratch.empty() || value_tokens.size() != 2 ||
                (kind != Tok::Int && kind != Tok::Float && kind != Tok::Ident);
  }
  std::string parsed_text = raw_value ? text.substr(0, eq) + "=0" : text;
  Lexer lexer(parsed_text, origin, diagnostics);
  std::vector<Token> tokens = lexer.run();
  if (diagnostics.size() != before) return false;
  if (tokens.front().kind != Tok::Ident) {
    diagnostics.error(tokens.front().where, "expected STAGE.PARAM=VALUE");
    return false;
  }
  Parser parser(std::move(tokens), diagnostics);
  if (!parser.parse_override_line(out) || diagnostics.size() != before) return false;
  if (raw_value) {
    out.value = RawValue{};
    out.value.kind = RawValue::Kind::Word;
    out.value.text = text.substr(eq + 1);
    out.value.where = {origin, 1, static_cast<int>(eq) + 2};
  }
  return true;
}

}  // namespace flowrun
