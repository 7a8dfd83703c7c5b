# syntax=docker/dockerfile:1
# One image for both processes: `serve` (API + dashboard) and `worker` (BullMQ processors).
# Build stage: the same commands CI runs (npm ci, typecheck via the build).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY queues ./queues
COPY fixtures/generator ./fixtures/generator
RUN npm run build && npm prune --omit=dev

# Runtime stage: compiled JS only, production dependencies, non-root user.
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    LHN_API_HOST=0.0.0.0 \
    LHN_API_PORT=8080 \
    LHN_CENTRES_DIR=/etc/lhn-bridge/centres \
    LHN_KEYS_DIR=/var/lib/lhn-bridge/keys \
    LHN_MAPPINGS_DIR=/app/mappings
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY mappings ./mappings
COPY src/api/dashboard ./dist/src/api/dashboard
RUN mkdir -p /etc/lhn-bridge/centres /var/lib/lhn-bridge/keys \
 && chown -R node:node /var/lib/lhn-bridge \
 && chmod 700 /var/lib/lhn-bridge/keys
USER node
EXPOSE 8080
# The API's /health. A worker opens no port: compose.yaml gives the worker service its own
# healthcheck on LHN_WORKER_HEALTH_PORT (docs/production.md, Monitoring).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.LHN_API_PORT||8080)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "bin/lhn-bridge.js"]
CMD ["serve"]
