-- Argo CD health of a ragops.dev RagDeployment, read from the status the operator writes
-- (the Available, Progressing, Degraded, RolledBack and SLOHealthy conditions, the phase, and
-- status.rollout for the canary and shadow strategies).
-- Argo CD runs custom health scripts with only the base, table and a safe os library: no string
-- or math library, so this script concatenates with `..` and nothing else.
local hs = {}

local function find(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local function holds(condition)
  return condition ~= nil and condition.status == "True"
end

local function describe(condition)
  if condition == nil then
    return ""
  end
  return (condition.reason or "") .. ": " .. (condition.message or "")
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe this deployment"
  return hs
end

if obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest generation"
  return hs
end

local available = find(status.conditions, "Available")
local progressing = find(status.conditions, "Progressing")
local degraded = find(status.conditions, "Degraded")
local rolledBack = find(status.conditions, "RolledBack")
local slo = find(status.conditions, "SLOHealthy")

-- An invalid spec, or a version that failed its gate with nothing served yet.
if status.phase == "Failed" then
  hs.status = "Degraded"
  if holds(degraded) then
    hs.message = describe(degraded)
  else
    hs.message = describe(available)
  end
  return hs
end

if holds(rolledBack) then
  hs.status = "Degraded"
  hs.message = describe(rolledBack)
  return hs
end

-- Fewer ready replicas than desired is a rollout the runtime Deployment is driving (and reports on
-- itself): Progressing here, like Argo CD's own Deployment health. Any other reason is Degraded.
if holds(degraded) and degraded.reason ~= "ReplicasUnavailable" then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end

if slo ~= nil and slo.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(slo)
  return hs
end

-- A progressive rollout (canary or shadow strategy) in flight: waiting for a person is Suspended, as
-- Argo CD shows a paused Argo Rollout; running steps is Progressing. An abort is Degraded above.
local rollout = status.rollout
if rollout ~= nil and rollout.phase == "Paused" then
  hs.status = "Suspended"
  hs.message = "Rollout paused: " .. (rollout.message or "")
  return hs
end
if rollout ~= nil and rollout.phase == "Progressing" and rollout.rolloutId ~= nil then
  hs.status = "Progressing"
  hs.message = "Rollout: " .. (rollout.message or "")
  return hs
end

-- spec.runtime.replicas 0 without autoscaling: scaled to zero on purpose.
local runtime = (obj.spec or {}).runtime
if runtime ~= nil and runtime.replicas == 0 and runtime.autoscaling == nil then
  hs.status = "Suspended"
  hs.message = "Scaled to zero: spec.runtime.replicas is 0"
  return hs
end

if holds(progressing) then
  hs.status = "Progressing"
  hs.message = describe(progressing)
  return hs
end

if holds(degraded) then
  hs.status = "Progressing"
  hs.message = describe(degraded)
  return hs
end

if holds(available) then
  hs.status = "Healthy"
  hs.message = "Serving " .. (status.activeVersion or "") .. ", " .. (available.message or "")
  if slo ~= nil and slo.status == "Unknown" then
    hs.message = hs.message .. "; SLOs not judged: " .. describe(slo)
  end
  return hs
end

hs.status = "Progressing"
hs.message = describe(available)
return hs
