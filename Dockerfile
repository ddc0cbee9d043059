# syntax=docker/dockerfile:1
# mirrorhook container image: docker build -t <registry>/mirrorhook:<version> .
#   build     compiles TypeScript with the full (dev) dependency set
#   prod-deps installs the runtime dependencies only, from the same lock file
#   runtime   distroless Node.js 20: no shell, no package manager, runs as uid 65532
ARG NODE_IMAGE=node:20-bookworm-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs20-debian12:nonroot

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY server ./server
RUN npm run build

FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: the runtime dependencies are pure JavaScript.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM ${RUNTIME_IMAGE} AS runtime
WORKDIR /app
ENV NODE_ENV=production
# glibc malloc keeps up to 8 MiB free at the top of its heap instead of 128 KiB: with the default,
# TLS buffers freed and taken again on every request can make the heap shrink and grow each time,
# a page fault per review or so (see test/bench/floor.ts).
ENV MALLOC_TRIM_THRESHOLD_=8388608
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# "type": "module" in package.json makes Node load dist/ as ES modules.
COPY package.json ./
# The numeric id lets Kubernetes enforce runAsNonRoot without reading /etc/passwd.
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/nodejs/bin/node", "dist/server/cli.js"]
CMD ["serve"]
