// Reading the configuration from disk: the only I/O around the pure config module.
import { readFile } from 'node:fs/promises'
import { parse as parseYaml, YAMLParseError } from 'yaml'
import { ConfigError } from '../core/config.js'
import { compilePolicy, type Policy } from '../core/policy.js'
import { resolveConfig, type Config, type EnvOverlay } from './config.js'

export async function readConfigFile(path: string): Promise<unknown> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (error) {
    throw new ConfigError([`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`])
  }
  try {
    return parseYaml(text, { prettyErrors: true }) ?? {}
  } catch (error) {
    const detail = error instanceof YAMLParseError ? error.message.split('\n')[0] : (error as Error).message
    throw new ConfigError([`${path} is not valid YAML: ${detail}`])
  }
}

export interface LoadedConfig {
  config: Config
  policy: Policy<Config>
  source: string
}

/** Loads, validates and compiles the configuration; throws ConfigError naming each bad key. */
export async function loadConfig(path: string | undefined, env: EnvOverlay = process.env): Promise<LoadedConfig> {
  const file = path ? await readConfigFile(path) : undefined
  const source = path ?? 'the embedded default configuration'
  const config = resolveConfig(file, env, path)
  return { config, policy: compilePolicy(config, path), source }
}
