-- Argo CD health of a ragops.dev KnowledgeBaseVersion, read from the status the operator writes
-- (phase Pending, Building, Evaluating, Ready or Failed, and the Built, GatePassed and Ready conditions).
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

local function describe(condition)
  if condition == nil then
    return ""
  end
  return (condition.reason or "") .. ": " .. (condition.message or "")
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe this version"
  return hs
end

local ready = find(status.conditions, "Ready")

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Deleting"
  if ready ~= nil and ready.reason == "InUse" then
    hs.message = "Deleting, " .. describe(ready)
  end
  return hs
end

if obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest generation"
  return hs
end

-- A failed build or gate is final for this version (its spec is immutable): a new version is the fix.
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

-- The store unreachable: nothing can be verified or started until it is back (retried every 10 s).
if ready ~= nil and ready.reason == "StoreUnavailable" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

if status.phase == "Ready" and ready ~= nil and ready.status == "True" then
  local gate = find(status.conditions, "GatePassed")
  hs.status = "Healthy"
  hs.message = ready.message or ""
  if gate ~= nil and gate.message ~= nil then
    hs.message = hs.message .. "; " .. gate.message
  end
  return hs
end

-- Pending, Building, Evaluating, or waiting for the store's Secret.
hs.status = "Progressing"
hs.message = status.phase or "Pending"
if ready ~= nil then
  hs.message = describe(ready)
end
return hs
