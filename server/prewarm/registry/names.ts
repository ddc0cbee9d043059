// Repository names and tags as distribution's reference grammar (reference/regexp.go) allows them, pure.

const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*'
const REPOSITORY = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`)
const TAG = /^[\w][\w.-]{0,127}$/

export function isRepositoryName(name: string): boolean {
  return name.length <= 255 && REPOSITORY.test(name)
}

export function isTag(tag: string): boolean {
  return TAG.test(tag)
}
