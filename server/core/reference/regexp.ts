// The image reference grammar as regular expressions (distribution/reference regexp.go):
//
//   reference     := name [ ":" tag ] [ "@" digest ]
//   name          := [ domain "/" ] path
//   domain        := host [ ":" port ]
//   host          := domain-name | IPv4 | "[" IPv6 "]"
//   domain-name   := domain-component [ "." domain-component ]*
//   path          := path-component [ "/" path-component ]*
//   path-component:= alphanumeric [ separator alphanumeric ]*
//   tag           := [\w][\w.-]{0,127}
//   digest        := algorithm ":" hex{32,}
//
// The expressions run on untrusted Pod specs, so they must not backtrack catastrophically. All are
// anchored, and neighbouring repetitions either use disjoint character classes or are split by a
// required ".", ":", "/" or "@", so a failing match revisits each character a bounded number of
// times: matching time is linear in the input length.

/** Path components are lowercase letters and digits only. */
const alphanumeric = '[a-z0-9]+'
/** Between alphanumerics: one period, one or two underscores, or any number of dashes. */
const separator = '(?:[._]|__|[-]+)'
/** A DNS label; uppercase is allowed in hosts, a dash may not start or end it. */
const domainNameComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])'
/** Dotted labels; also covers IPv4 addresses in decimal form. */
const domainName = `${domainNameComponent}(?:\\.${domainNameComponent})*`
/** IPv6 in brackets, compressed or not; zones (`%eth0`) and embedded IPv4 are excluded. */
const ipv6address = '\\[(?:[a-fA-F0-9:]+)\\]'
/** Registry host: a domain name or a bracketed IPv6 address. */
const host = `(?:${domainName}|${ipv6address})`
/** Any digits; the range is not checked, as in the grammar. */
const optionalPort = '(?::[0-9]+)?'
/** Registry host with an optional port. */
const domainAndPort = host + optionalPort
/** One slash-free piece of the repository path. */
const pathComponent = `${alphanumeric}(?:${separator}${alphanumeric})*`
/** The repository path, e.g. `library/ubuntu`. */
const remoteName = `${pathComponent}(?:/${pathComponent})*`
/** Optional domain followed by the path: what is left of a reference without tag and digest. */
const namePattern = `(?:${domainAndPort}/)?${remoteName}`
/** Up to 128 word characters, dots and dashes, not starting with a dot or dash. */
const tagPattern = '[\\w][\\w.-]{0,127}'
/** Algorithm (components joined by `-_+.`), colon, at least 128 bits of hex. */
const digestPattern = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}'
/** A 64-hex image ID, which could be mistaken for a repository name. */
const identifier = '([a-f0-9]{64})'

const anchored = (re: string): RegExp => new RegExp(`^${re}$`)

/** The grammar, anchored; `name` and `reference` capture the groups noted on them. */
export const referenceGrammar = Object.freeze({
  /** Host and optional port. */
  domainAndPort: anchored(domainAndPort),
  /** Name split into captures 1 = domain (may be absent) and 2 = path. */
  name: anchored(`(?:(${domainAndPort})/)?(${remoteName})`),
  /** Full reference: captures 1 = name, 2 = tag, 3 = digest. */
  reference: anchored(`(${namePattern})(?::(${tagPattern}))?(?:@(${digestPattern}))?`),
  tag: anchored(tagPattern),
  digest: anchored(digestPattern),
  identifier: anchored(identifier),
})
