#!/usr/bin/env node
import { main } from './cli/program.js'

main(process.argv).then((code) => {
  if (code !== 0) process.exit(code)
})
