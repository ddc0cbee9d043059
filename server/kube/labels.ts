// The labels on every object mirrorhook creates (ImageCaches, its state ConfigMap, its TLS Secret).
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by'
export const MANAGED_BY = 'mirrorhook'
export const COMPONENT_LABEL = 'app.kubernetes.io/component'

/** Selects what mirrorhook manages. */
export const MANAGED_SELECTOR = `${MANAGED_BY_LABEL}=${MANAGED_BY}`

/** The labels of an object mirrorhook manages, with the component that owns it. */
export function managedLabels(component?: string): Record<string, string> {
  return component ? { [MANAGED_BY_LABEL]: MANAGED_BY, [COMPONENT_LABEL]: component } : { [MANAGED_BY_LABEL]: MANAGED_BY }
}
